"""Runtime metrics: names and types on /metrics, and values that match the process."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client.parser import text_string_to_metric_families

from telemetry.exposition.reader import PrometheusReader
from telemetry.instrumentation.runtime import RuntimeMetrics

EXPECTED_TYPES = {
    "process_cpu_time_seconds_total": "counter",
    "process_memory_usage_bytes": "gauge",
    "process_open_file_descriptor_count": "gauge",
    "process_thread_count": "gauge",
    "cpython_gc_collections_total": "counter",
    "cpython_gc_collected_objects_total": "counter",
    "process_start_time_seconds": "gauge",
    "process_uptime_seconds": "gauge",
    "application_info": "gauge",
    "application_dependency_info": "gauge",
}


@pytest.fixture
def reader() -> Iterator[PrometheusReader]:
    reader = PrometheusReader(None, target_info=False)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    RuntimeMetrics(provider.get_meter("telemetry.runtime"), service_name="svc", service_version="1.0",
                   git_sha="abc123")
    yield reader
    provider.shutdown()


def scrape(reader: PrometheusReader) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(reader.scrape()):
        for s in family.samples:
            out[(s.name.removesuffix("_total") if family.type == "counter" else s.name,
                 tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_names_and_types(reader: PrometheusReader) -> None:
    text = reader.scrape()
    assert dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)) == EXPECTED_TYPES


def test_values_match_the_process(reader: PrometheusReader) -> None:
    before = scrape(reader)
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # burn CPU so user time visibly grows
        pass
    stop = threading.Event()
    extra = threading.Thread(target=stop.wait)
    extra.start()
    try:
        after = scrape(reader)
    finally:
        stop.set()
        extra.join()
    def cpu(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
        return sum(value(samples, "process_cpu_time_seconds", cpu_mode=m) for m in ("user", "system"))

    assert cpu(after) >= cpu(before) + 0.25
    assert cpu(after) <= sum(os.times()[:2]) + 0.01
    rss = value(after, "process_memory_usage_bytes")
    assert 5e6 < rss < 5e9
    fds = value(after, "process_open_file_descriptor_count")
    assert fds == pytest.approx(len(os.listdir("/proc/self/fd")), abs=3)
    # Other tests' daemon threads may come and go: compare with the OS's count read right after.
    with open("/proc/self/status") as f:
        threads_now = next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
    assert value(after, "process_thread_count") >= 2
    assert abs(value(after, "process_thread_count") - threads_now) <= 2
    assert value(after, "process_uptime_seconds") > value(before, "process_uptime_seconds")
    assert abs(value(after, "process_start_time_seconds") - time.time()) < 60
    assert value(after, "cpython_gc_collections", cpython_gc_generation="0") >= 0


def test_info_metrics_carry_versions(reader: PrometheusReader) -> None:
    import platform
    from importlib import metadata

    samples = scrape(reader)
    info = [labels for (name, labels), v in samples.items() if name == "application_info" and v == 1]
    assert info == [tuple(sorted({"service_name": "svc", "service_version": "1.0", "git_sha": "abc123",
                                  "python_version": platform.python_version(),
                                  "python_implementation": platform.python_implementation()}.items()))]
    deps = {dict(labels)["name"]: dict(labels)["version"] for (name, labels), _ in samples.items()
            if name == "application_dependency_info"}
    assert deps["opentelemetry-sdk"] == metadata.version("opentelemetry-sdk") == "1.45.1"
    assert deps["tuist-telemetry"] == metadata.version("tuist-telemetry")


def test_unset_info_values_are_left_out() -> None:
    reader = PrometheusReader(None, target_info=False)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    try:
        RuntimeMetrics(provider.get_meter("r"))
        text = reader.scrape()
    finally:
        provider.shutdown()
    [line] = [x for x in text.splitlines() if x.startswith("application_info{")]
    assert "service_name" not in line and 'git_sha=""' not in line and "python_version=" in line
