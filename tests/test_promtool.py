"""``promtool check metrics`` on the exposition: no parse errors. Naming lints are expected, and only on
catalogue names (the doc's spellings: counters without ``_total``, ``_count`` counters, ms/ns units) and on
the two OpenTelemetry semantic-convention runtime names that end in ``_count``."""

from __future__ import annotations

import re
import subprocess

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource

from telemetry.catalogue import BY_NAME, PROCESS_OPEN_FILE_DESCRIPTORS, PROCESS_THREADS
from telemetry.exposition.reader import PrometheusReader
from telemetry.instrumentation.runtime import RuntimeMetrics
from telemetry.recorders import Recorders
from telemetry.registry import Registry
from telemetry.simulate import Simulator

from .conftest import require_binary
from .test_golden import fill

# process.open_file_descriptor.count and process.thread.count: OpenTelemetry's names, kept as the standard
# OTel-to-Prometheus naming gives them.
SEMCONV_COUNT_GAUGES = {PROCESS_OPEN_FILE_DESCRIPTORS, PROCESS_THREADS}


def promtool(text: str) -> subprocess.CompletedProcess[str]:
    binary = require_binary("promtool")
    return subprocess.run([binary, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)


def lints(result: subprocess.CompletedProcess[str]) -> dict[str, list[str]]:
    """promtool prints one ``name problem`` line per lint (on stderr, in 2.42)."""
    out: dict[str, list[str]] = {}
    for line in (result.stdout + result.stderr).splitlines():
        if not line.strip():
            continue
        name, _, problem = line.partition(" ")
        out.setdefault(name, []).append(problem)
    return out


def full_exposition() -> str:
    """The catalogue (filled deterministically, plus a simulator tick) and the runtime metrics."""
    registry = Registry()
    fill(registry)
    simulator = Simulator(Recorders(registry), seed=1)
    simulator.tick()
    reader = PrometheusReader(registry)
    provider = MeterProvider(resource=Resource({"service.name": "promtool"}), metric_readers=[reader],
                             shutdown_on_exit=False)
    try:
        RuntimeMetrics(provider.get_meter("telemetry.runtime"), service_name="promtool")
        return reader.scrape()
    finally:
        provider.shutdown()


def test_exposition_parses_and_only_documented_spellings_are_linted() -> None:
    text = full_exposition()
    assert "process_cpu_time_seconds_total" in text and "tuist_runs_total{" in text
    result = promtool(text)
    assert "error while linting" not in result.stderr, result.stderr
    assert result.returncode in (0, 3), result.stderr
    found = lints(result)
    assert found, "the doc's spellings do draw lints; an empty list means promtool saw nothing"
    for name, problems in found.items():
        if name in SEMCONV_COUNT_GAUGES:
            assert problems == ['non-histogram and non-summary metrics should not have "_count" suffix']
            continue
        assert name in BY_NAME, f"{name} is not a catalogue name: {problems}"
        for problem in problems:
            assert re.fullmatch(r'(non-)?counter metrics should (not )?have "_total" suffix'
                                r'|non-histogram and non-summary metrics should not have "_count" suffix'
                                r'|use base unit "seconds" instead of "(milli|nano)seconds"', problem), problem
    # The documented counter without _total is linted as a counter, i.e. promtool typed it as documented.
    assert 'counter metrics should have "_total" suffix' in found["tuist_http_request_count"]


@pytest.mark.parametrize("broken", [
    '# TYPE x counter\nx{a="b} 1\n',
    "# TYPE x counter\nx 1 2 3\n",
    '# TYPE x counter\nx{a="1",a="2"} 1\n',
])
def test_promtool_rejects_broken_expositions(broken: str) -> None:
    """The control: the check above can fail."""
    result = promtool(broken)
    assert result.returncode == 1 and "error while linting" in result.stderr
