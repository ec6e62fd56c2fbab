"""setup()/shutdown(): idempotence, the served endpoint, OTEL_SDK_DISABLED, a taken port, OTLP push."""

from __future__ import annotations

import gzip
import os
import socket
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import telemetry
from telemetry.config import ENV
from telemetry.registry import Registry
from telemetry.testing import wait_for

from .conftest import free_port

pytestmark = pytest.mark.usefixtures("clean_setup")


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return str(response.read().decode())


def test_setup_serves_catalogue_and_runtime_metrics(registry: Registry) -> None:
    t = telemetry.setup(registry=registry, metrics_host="127.0.0.1", metrics_port=0, service_name="svc-test",
                        service_version="9.9.9")
    assert t.server is not None and t.metrics_url is not None
    assert t.metrics_url.startswith("http://127.0.0.1:") and t.metrics_url.endswith("/metrics")
    t.recorders.runs.record("build", is_ci=False, status=0, duration_ms=42.0)
    text = fetch(t.metrics_url)
    assert 'tuist_runs_total{name="build",is_ci="false",status="0"} 1\n' in text
    assert "# TYPE process_cpu_time_seconds_total counter\n" in text
    assert "# TYPE process_memory_usage_bytes gauge\n" in text
    assert 'service_name="svc-test"' in text and 'service_version="9.9.9"' in text
    assert "tuist_runs_total{" in t.scrape()


def test_setup_is_idempotent_and_shutdown_allows_a_new_setup(registry: Registry) -> None:
    first = telemetry.setup(registry=registry, metrics_host="127.0.0.1", metrics_port=0)
    assert telemetry.setup(metrics_port=1) is first, "later calls return the running instance"
    assert telemetry.current() is first
    url = first.metrics_url
    assert url is not None
    telemetry.shutdown()
    assert telemetry.current() is None
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)
    second = telemetry.setup(registry=registry, metrics_host="127.0.0.1", metrics_port=0)
    assert second is not first and second.metrics_url is not None
    fetch(second.metrics_url)
    telemetry.shutdown()
    telemetry.shutdown()  # twice is harmless


def test_port_in_use_fails_setup_with_the_port_and_the_setting(registry: Registry) -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        with pytest.raises(telemetry.ExpositionError, match=f"127.0.0.1:{port}.*{ENV['metrics_port']}"):
            telemetry.setup(registry=registry, metrics_host="127.0.0.1", metrics_port=port)
    assert telemetry.current() is None
    # Nothing half-started is left behind: the same port works once it is free.
    t = telemetry.setup(registry=registry, metrics_host="127.0.0.1", metrics_port=port)
    assert t.server is not None and t.server.port == port


def test_bad_settings_fail_setup(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV["metrics_port"], "not-a-port")
    with pytest.raises(telemetry.SettingsError, match="TUIST_METRICS_PORT='not-a-port' is not valid"):
        telemetry.setup(registry=registry)
    assert telemetry.current() is None


def test_sdk_disabled_starts_nothing_but_recording_works(registry: Registry,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV["sdk_disabled"], "true")
    t = telemetry.setup(registry=registry, metrics_host="127.0.0.1", metrics_port=0)
    assert t.server is None and t.meter_provider is None and t.metrics_url is None
    assert t.scrape() == ""
    t.recorders.cache.uploaded(10)  # recording still works (and costs nothing to expose)
    assert registry.counter("tuist_cache_uploaded_bytes").labels().value == 10


def test_serve_false_still_scrapes(registry: Registry) -> None:
    t = telemetry.setup(registry=registry, serve=False, runtime_metrics=False)
    assert t.server is None
    text = t.scrape()
    assert "# TYPE tuist_runs_total counter" in text and "process_cpu_time" not in text


def test_cardinality_limits_from_settings_reach_the_registry(registry: Registry) -> None:
    telemetry.setup(registry=registry, serve=False, cardinality_limit=5,
                    cardinality_limits={"tuist_runs_total": 2})
    assert registry.counter("tuist_runs_total").limit == 2
    assert registry.counter("tuist_http_request_count").limit == 5


def test_target_info_setting(registry: Registry) -> None:
    t = telemetry.setup(registry=registry, serve=False, target_info=False, runtime_metrics=False)
    assert "target_info" not in t.scrape()


class _OtlpSink(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        type(self).bodies.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def otlp_sink() -> Iterator[tuple[str, list[bytes]]]:
    _OtlpSink.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtlpSink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/metrics", _OtlpSink.bodies
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_otlp_push_carries_the_catalogue_beside_sdk_metrics(registry: Registry, otlp_sink: tuple[str, list[bytes]],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    url, bodies = otlp_sink
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", url)
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    t = telemetry.setup(registry=registry, serve=False, service_name="pushed")
    t.recorders.runs.record("test", is_ci=True, status=1, duration_ms=250.0)
    t.recorders.cache.event("miss")
    wait_for(lambda: bodies, 10, what="the first OTLP push")
    telemetry.shutdown()  # flushes a final export
    assert bodies, "nothing was pushed"
    request = ExportMetricsServiceRequest()
    request.ParseFromString(bodies[-1])
    [resource] = request.resource_metrics
    attrs = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert attrs["service.name"] == "pushed"
    metrics = {m.name: m for sm in resource.scope_metrics for m in sm.metrics}
    assert "process.cpu.time" in metrics, "the SDK's own metrics are pushed too"
    runs = metrics["tuist_runs_total"]
    [point] = runs.sum.data_points
    assert runs.sum.is_monotonic and point.as_int == 1
    assert {a.key: a.value.string_value for a in point.attributes} == {"name": "test", "is_ci": "true",
                                                                     "status": "1"}
    [hpoint] = metrics["tuist_runs_duration_milliseconds"].histogram.data_points
    assert (hpoint.count, hpoint.sum, hpoint.min, hpoint.max) == (1, 250.0, 250.0, 250.0)
    assert list(hpoint.bucket_counts)[:3] == [0, 1, 0]
    assert metrics["tuist_runs_duration_milliseconds"].unit == "ms"


def test_otlp_push_without_any_sdk_metrics_still_carries_the_catalogue(
        registry: Registry, otlp_sink: tuple[str, list[bytes]], monkeypatch: pytest.MonkeyPatch) -> None:
    """With runtime metrics off and no instrumentation the SDK collects nothing; the catalogue is pushed anyway."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    url, bodies = otlp_sink
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", url)
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    t = telemetry.setup(registry=registry, serve=False, runtime_metrics=False, service_name="quiet")
    t.recorders.cache.event("remote_hit")
    telemetry.shutdown()
    assert bodies, "nothing was pushed"
    request = ExportMetricsServiceRequest()
    request.ParseFromString(bodies[-1])
    [resource] = request.resource_metrics
    assert {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"] == "quiet"
    metrics = {m.name: m for sm in resource.scope_metrics for m in sm.metrics}
    points = {p.attributes[0].value.string_value: p.as_int for p in metrics["tuist_cache_events_total"].sum.data_points}
    assert points == {"local_hit": 0, "miss": 0, "remote_hit": 1}  # the recorder binds all three up front


def test_a_missing_or_unwritable_multiprocess_directory_fails_setup_naming_the_setting(
        tmp_path: Path, registry: Registry) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(telemetry.SettingsError, match=f"{ENV['multiprocess_dir']}.*nope"):
        telemetry.setup(registry=registry, serve=False, multiprocess_dir=str(missing))
    assert telemetry.current() is None
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() != 0:  # root may write anyway
        with pytest.raises(telemetry.SettingsError, match=ENV["multiprocess_dir"]):
            telemetry.setup(registry=registry, serve=False, multiprocess_dir=str(locked))


_WORKER = """
import sys, time, telemetry
t = telemetry.setup(metrics_host="127.0.0.1", metrics_port=int(sys.argv[1]), multiprocess_dir=sys.argv[2],
                    multiprocess_refresh_seconds=0.2, service_name="mp")
for _ in range(int(sys.argv[3])):
    t.recorders.runs.record("build", is_ci=True, status=0, duration_ms=5.0)
print("ready", flush=True)
sys.stdin.read()  # until the test closes stdin
telemetry.shutdown()
"""


def test_processes_in_multiprocess_mode_share_the_port_and_each_answers_with_the_merged_view(
        tmp_path: Path) -> None:
    """Three processes bind one metrics port (no one fails because another took it); every scrape, whichever
    answers, shows the sum, and each live process's runtime series with its pid."""
    import subprocess
    import sys

    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(port), str(tmp_path), str(n)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for n in (100, 200, 300)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        pids = {str(p.pid) for p in procs}
        for _ in range(6):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                text = response.read().decode()
            assert 'tuist_runs_total{name="build",is_ci="true",status="0"} 600\n' in text
            assert text.count("# TYPE process_thread_count ") == 1
            shown = {line.split('pid="')[1].split('"')[0] for line in text.splitlines()
                     if line.startswith("process_thread_count{")}
            assert shown == pids
    finally:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in procs:
            assert proc.wait(timeout=20) == 0
