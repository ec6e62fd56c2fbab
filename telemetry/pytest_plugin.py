"""pytest fixtures over ``telemetry.testing``; enable them with ``pytest_plugins = ["telemetry.pytest_plugin"]``
in a ``conftest.py`` (this module imports pytest, which the package itself does not need)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from telemetry.registry import Registry
from telemetry.setup import Telemetry
from telemetry.testing import isolated


@pytest.fixture
def telemetry_instance() -> Iterator[Telemetry]:
    """An isolated ``setup()`` (own registry, no endpoint, no runtime metrics) shut down after the test."""
    with isolated(runtime_metrics=False) as instance:
        yield instance


@pytest.fixture
def telemetry_registry() -> Registry:
    """A fresh catalogue ``Registry``, for recorders and families used without ``setup()``."""
    return Registry()
