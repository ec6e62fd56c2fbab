"""Zero-code instrumentation: the same app run plainly and under ``opentelemetry-instrument`` (the
opentelemetry-distro, whose configurator installs its own global MeterProvider before the app starts, and
auto-instruments httpx and SQLAlchemy). Under the distro ``setup()`` leaves the global alone and says so in one
line (no "Overriding of current MeterProvider" warning), and /metrics serves every catalogue family with the
same values as without it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from telemetry.catalogue import CATALOGUE
from telemetry.testing import sample_value
from tests.conftest import free_port, require

APP = Path(__file__).with_name("otel_instrument_app.py")
INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")
ALREADY_SET = "OpenTelemetry's global MeterProvider was already set"


def families(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


@pytest.fixture
def run(tmp_path: Path) -> Iterator[object]:
    started: list[subprocess.Popen[str]] = []

    def start(*prefix: str) -> tuple[str, subprocess.Popen[str]]:
        port = free_port()
        # No exporter of the distro's may try to reach a collector: everything stays in the process.
        env = {**os.environ, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
               "OTEL_LOGS_EXPORTER": "none", "PYTHONPATH": str(APP.parent.parent)}
        process = subprocess.Popen([*prefix, sys.executable, str(APP), str(port), str(tmp_path / f"{port}.db")],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env=env)
        started.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line == "ready\n", process.communicate(timeout=10)
        return httpx.get(f"http://127.0.0.1:{port}/metrics").text, process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def finish(process: subprocess.Popen[str]) -> str:
    _, stderr = process.communicate("", timeout=30)
    assert process.returncode == 0, stderr
    return stderr


def test_every_catalogue_family_is_served_under_opentelemetry_instrument(run: object) -> None:
    require(INSTRUMENT.exists(), "opentelemetry-instrument is not installed (opentelemetry-distro, dev extra)")
    plain, plain_process = run()  # type: ignore[operator]
    instrumented, process = run(str(INSTRUMENT))  # type: ignore[operator]
    plain_log, log = finish(plain_process), finish(process)

    assert "global meter provider before setup: _ProxyMeterProvider" in plain_log
    assert "global meter provider before setup: MeterProvider" in log  # the distro's, set before the app ran
    assert "Overriding of current MeterProvider" not in log, log
    assert log.count(ALREADY_SET) == 1 and ALREADY_SET not in plain_log, log

    catalogue = {spec.name for spec in CATALOGUE}
    assert catalogue <= families(instrumented), sorted(catalogue - families(instrumented))
    assert {f for f in families(plain) if f in catalogue} == {f for f in families(instrumented) if f in catalogue}
    for text in (plain, instrumented):
        assert sample_value(text, "tuist_runs_total", name="build", is_ci="false", status="0") == 1
        assert sample_value(text, "tuist_http_request_count", method="GET", host="127.0.0.1", status="200") == 1
        assert sample_value(text, "tuist_repo_pool_db_connection_connected", pool="repo") == 1
        assert sample_value(text, "tuist_repo_query_duration_milliseconds_count", pool="repo",
                            statement="SELECT") == 1
