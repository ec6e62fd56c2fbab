"""Shared fixtures. A test that needs a missing service calls ``require(...)``: it skips locally, and fails
when TELEMETRY_REQUIRE_SERVICES=1 (as in CI), so a green CI run cannot hide a missing install step."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator

import pytest

from telemetry.registry import Registry

pytest_plugins = ["telemetry.pytest_plugin"]

STRICT = os.environ.get("TELEMETRY_REQUIRE_SERVICES") == "1"


def require(condition: bool, reason: str) -> None:
    """Skip (locally) or fail (CI) unless ``condition``."""
    if not condition:
        if STRICT:
            pytest.fail(f"required service missing in CI: {reason}")
        pytest.skip(reason)


def require_binary(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"{name} is not installed (Debian package)")
    assert path is not None
    return path


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def clean_setup() -> Iterator[None]:
    """Make sure no global telemetry instance leaks between tests."""
    import telemetry

    telemetry.shutdown()
    yield
    telemetry.shutdown()
