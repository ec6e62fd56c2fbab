"""Shared fixtures. A test that needs a missing service calls ``require(...)``: it skips locally, and fails
when TELEMETRY_REQUIRE_SERVICES=1 (as in CI), so a green CI run cannot hide a missing install step. The run ends
with the skips grouped by reason, each with the command that enables those tests."""

from __future__ import annotations

import os
import shutil
import socket
from collections import Counter
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


# What enables a skipped test, by a word of its skip reason (the reasons `require` callers give).
ENABLE = (
    ("Debian package", "make deps   (apt-get: prometheus, prometheus-alertmanager, chromium, nodejs, npm)"),
    ("npm ci", "make deps && make setup   (npm, then the npm packages)"),
    ("PostgreSQL", "a PostgreSQL on 127.0.0.1:5432 with trust auth and a database `test`"),
    ("Redis", "a Redis on 127.0.0.1:6379"),
    ("package index", "network access to the package index (PyPI)"),
)


def skip_summary(reasons: list[str]) -> list[str]:
    """The skip reasons grouped by what enables those tests, each reason once with its count."""
    groups: dict[str, Counter[str]] = {}
    for reason in reasons:
        enable = next((how for word, how in ENABLE if word in reason), "(no command: see the reason)")
        groups.setdefault(enable, Counter())[reason] += 1
    lines = []
    for enable, counts in sorted(groups.items(), key=lambda item: -item[1].total()):
        lines.append(f"{counts.total()} skipped; to run them: {enable}")
        lines.extend(f"  {n:3d} x {reason}" for reason, n in counts.most_common())
    return lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    reasons = []
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reasons.append(reason.removeprefix("Skipped: "))
    if reasons:
        terminalreporter.section("skipped tests and how to run them")
        for line in skip_summary(reasons):
            terminalreporter.write_line(line)
        terminalreporter.write_line("(`.ci/run` runs `make deps`, then the suite with skips as failures)")


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
