"""Shutdown returns within a bound whatever the metrics receiver does (telemetry/export.py).

Real sockets on 127.0.0.1: a refused port (nothing listens), a black hole (a listening socket that accepts
every connection and never answers) and a healthy receiver that records what it gets. For the OTLP reader
(``otlp_reader``) and the remote-write reader (``remote_write_reader``): ``shutdown_provider`` returns
within its bound against the first two, and against the healthy one returns at once having delivered the
final export. The stock pieces block for the exporter's own timeout and retries instead (measured ~7.6 s
refused and ~10 s black-holed for OTLP; see the docstring of telemetry/export.py for why).
"""

from __future__ import annotations

import gzip
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, PeriodicExportingMetricReader

import telemetry
from telemetry.catalogue import RUNS_TOTAL
from telemetry.export import DEFAULT_EXPORT_TIMEOUT_S, DEFAULT_SHUTDOWN_TIMEOUT_S, otlp_reader, shutdown_provider
from telemetry.registry import Registry

from .conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
# Scheduling, thread start-up and the interpreter's own work on a busy 2-core machine.
SLACK_S = 0.75


class Sink:
    """A healthy receiver on 127.0.0.1: answers every POST with ``status`` and keeps the bodies."""

    def __init__(self, status: int = 200) -> None:
        bodies: list[tuple[str, bytes]] = []
        self.bodies = bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                bodies.append((self.path, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class BlackHole:
    """Listens on 127.0.0.1, accepts every connection, reads nothing and never answers."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._listener.settimeout(0.05)  # a close from another thread does not wake a blocked accept()
        self.port = int(self._listener.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.accepted.append(conn)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        for conn in self.accepted:
            conn.close()


class Refused:
    """A loopback port nothing listens on: every connection is refused at once."""

    def __init__(self) -> None:
        self.port = free_port()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        pass


@contextmanager
def receiver(kind: str) -> Iterator[Any]:
    server = {"healthy": Sink, "black_hole": BlackHole, "refused": Refused}[kind]()
    try:
        yield server
    finally:
        server.close()


def otlp_runs(bodies: list[tuple[str, bytes]]) -> list[float]:
    """tuist_runs_total's values in each OTLP request received."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    values = []
    for _, body in bodies:
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == RUNS_TOTAL:
                        values.extend(p.as_int or p.as_double for p in m.sum.data_points)
    return values


def remote_write_runs(bodies: list[tuple[str, bytes]]) -> list[float]:
    """tuist_runs_total's values in each remote-write request received."""
    from .test_remote_write import decode

    return [value for _, body in bodies for name, _, value in decode(body) if name == RUNS_TOTAL]


def make_reader(exporter: str, url: Callable[[str], str], *, timeout_s: float, interval_s: float) -> Any:
    if exporter == "otlp":
        return otlp_reader(timeout_s, interval_s=interval_s, endpoint=url("/v1/metrics"))
    pytest.importorskip("opentelemetry.exporter.prometheus_remote_write", reason="the remote-write extra")
    from telemetry.remote_write import remote_write_reader

    return remote_write_reader(url("/api/v1/write"), interval_s=interval_s, timeout_s=timeout_s)


def timed_shutdown(reader: Any, registry: Registry, bound: float, *, before_shutdown: float = 0.0) -> \
        tuple[bool, float]:
    t = telemetry.setup(registry=registry, serve=False, metric_readers=[reader], service_name="bounded",
                        runtime_metrics=False)
    t.recorders.runs.record("build", is_ci=False, status=0, duration_ms=120.0)
    if before_shutdown:
        time.sleep(before_shutdown)
    assert t.meter_provider is not None
    started = time.monotonic()
    finished = shutdown_provider(t.meter_provider, bound)
    elapsed = time.monotonic() - started
    telemetry.shutdown()  # the server and closers; the provider is already shut down
    print(f"\n  shutdown_provider(bound={bound}) -> {finished} in {elapsed:.2f} s", end="")
    return finished, elapsed


EXPORTERS = ("otlp", "remote_write")


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("kind", ["refused", "black_hole"])
def test_shutdown_returns_within_the_default_bound_when_the_receiver_fails(
        exporter: str, kind: str, registry: Registry, clean_setup: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL)  # the exporters log every failed export
    with receiver(kind) as server:
        reader = make_reader(exporter, server.url, timeout_s=DEFAULT_EXPORT_TIMEOUT_S, interval_s=60)
        _, elapsed = timed_shutdown(reader, registry, DEFAULT_SHUTDOWN_TIMEOUT_S)
    # One final export, given up after the exporter's own timeout: well inside the bound.
    assert elapsed <= DEFAULT_EXPORT_TIMEOUT_S + SLACK_S
    assert DEFAULT_EXPORT_TIMEOUT_S * 2 + SLACK_S <= DEFAULT_SHUTDOWN_TIMEOUT_S


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_shutdown_with_an_export_already_hanging_still_meets_the_bound(
        exporter: str, registry: Registry, clean_setup: None, caplog: pytest.LogCaptureFixture) -> None:
    """A periodic export is stuck on the black hole when shutdown starts: it and the final export each give up
    after the export timeout, so the bound holds with room to spare."""
    caplog.set_level(logging.CRITICAL)
    with receiver("black_hole") as server:
        reader = make_reader(exporter, server.url, timeout_s=1.0, interval_s=0.1)
        _, elapsed = timed_shutdown(reader, registry, 3.0, before_shutdown=0.3)
        assert server.accepted, "the periodic export never reached the black hole"
    assert elapsed <= 2 * 1.0 + SLACK_S


def test_the_sdk_deadline_already_cuts_a_stock_exporter_short(registry: Registry, clean_setup: None,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """The stock remote-write exporter with its default 30 s POST timeout, on the black hole: the provider's
    own deadline ends the reader's join at the bound; the POST is left to the daemon ticker thread."""
    pytest.importorskip("opentelemetry.exporter.prometheus_remote_write", reason="the remote-write extra")
    from opentelemetry.exporter.prometheus_remote_write import PrometheusRemoteWriteMetricsExporter
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    caplog.set_level(logging.CRITICAL)
    with receiver("black_hole") as server:
        reader = PeriodicExportingMetricReader(PrometheusRemoteWriteMetricsExporter(server.url("/api/v1/write")),
                                               export_interval_millis=60_000)
        _, elapsed = timed_shutdown(reader, registry, 1.0)
        assert server.accepted
    assert 0.9 - 0.05 <= elapsed <= 1.0 + SLACK_S  # shutdown_provider gives the SDK 90 % of the bound


class _SlowShutdownExporter(MetricExporter):
    """Stands for an exporter whose shutdown ignores its timeout (flushes a queue synchronously, say)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.exported = 0

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.exported += 1
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        time.sleep(self.seconds)


def test_the_bound_holds_even_for_an_exporter_that_ignores_it(registry: Registry, clean_setup: None,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """``shutdown_provider`` returns at its deadline (False, with a warning) however long a reader takes;
    the rest goes on in a daemon thread."""
    caplog.set_level(logging.WARNING, logger="telemetry.export")
    exporter = _SlowShutdownExporter(3.0)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
    finished, elapsed = timed_shutdown(reader, registry, 1.0)
    assert not finished
    assert 1.0 - 0.05 <= elapsed <= 1.0 + SLACK_S
    assert exporter.exported == 1  # the final export was made before the exporter's shutdown hung
    assert "did not finish within 1.0 s" in caplog.text


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_a_healthy_receiver_gets_the_final_export_at_once(exporter: str, registry: Registry,
                                                          clean_setup: None) -> None:
    with receiver("healthy") as sink:
        reader = make_reader(exporter, sink.url, timeout_s=DEFAULT_EXPORT_TIMEOUT_S, interval_s=60)
        finished, elapsed = timed_shutdown(reader, registry, DEFAULT_SHUTDOWN_TIMEOUT_S)
        bodies = list(sink.bodies)
    assert finished
    assert elapsed <= 0.5 + SLACK_S
    # The interval is a minute: the only export is the final one, made by the shutdown.
    runs = otlp_runs(bodies) if exporter == "otlp" else remote_write_runs(bodies)
    assert runs == [1]


@pytest.mark.parametrize("status", [503, 400])
def test_otlp_reader_bounds_retries_of_an_answering_but_failing_receiver(
        status: int, registry: Registry, clean_setup: None, caplog: pytest.LogCaptureFixture) -> None:
    """503 is retried (backoff 1 s, 2 s, ...) until the export timeout; 400 is not retried."""
    caplog.set_level(logging.CRITICAL)
    failing = Sink(status)
    try:
        reader = otlp_reader(1.5, interval_s=60, endpoint=failing.url("/v1/metrics"))
        _, elapsed = timed_shutdown(reader, registry, DEFAULT_SHUTDOWN_TIMEOUT_S)
        attempts = len(failing.bodies)
    finally:
        failing.close()
    assert elapsed <= 1.5 + SLACK_S
    assert attempts == (2 if status == 503 else 1)


def test_otlp_reader_reads_the_standard_timeout_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from telemetry.export import otlp_timeout_s

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TIMEOUT", raising=False)
    assert otlp_timeout_s() == DEFAULT_EXPORT_TIMEOUT_S
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "4")
    assert otlp_timeout_s() == 4.0
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "0.5")
    assert otlp_timeout_s() == 0.5
    assert otlp_timeout_s(3) == 3.0
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_METRICS_TIMEOUT"):
        otlp_timeout_s()
    with pytest.raises(ValueError, match="positive"):
        shutdown_provider(None, 0)  # type: ignore[arg-type]


_EXIT_CHILD = """
import sys, time
from telemetry.bridge import CatalogueMeterProvider
from telemetry.export import otlp_reader, shutdown_at_exit
from telemetry.registry import Registry

registry = Registry()
reader = otlp_reader(float(sys.argv[2]), interval_s=60, endpoint=sys.argv[1])
provider = CatalogueMeterProvider.build(registry, [reader], shutdown_on_exit=False)
shutdown_at_exit(provider, float(sys.argv[3]))
registry.counter("tuist_runs_total").labels(name="build", is_ci="false", status="0").inc()
print("exiting", flush=True)
sys.exit(0)
"""


def test_process_exit_is_bounded_too(tmp_path: Path) -> None:
    """A process that never calls shutdown: ``shutdown_at_exit`` runs the bounded shutdown when it exits,
    here with an export timeout (10 s) longer than the bound (1 s), against the black hole."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TUIST_"))}
    with receiver("black_hole") as server:
        proc = subprocess.Popen([sys.executable, "-c", _EXIT_CHILD, server.url("/v1/metrics"), "10", "1"],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            started = time.monotonic()
            proc.wait(timeout=15)
            elapsed = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert server.accepted, "the final export never reached the black hole"
    assert line == b"exiting\n", proc.stderr.read() if proc.stderr else ""
    print(f"\n  exit took {elapsed:.2f} s after 'exiting'", end="")
    assert proc.returncode == 0
    assert 0.8 <= elapsed <= 1.0 + SLACK_S  # the SDK's join ends at 90 % of the bound; the export is abandoned


@pytest.mark.parametrize("kind", ["refused", "black_hole"])
def test_telemetry_shutdown_is_bounded_with_otlp_from_the_environment(
        kind: str, registry: Registry, clean_setup: None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The user's path: OTEL_METRICS_EXPORTER=otlp, then telemetry.shutdown() (TUIST_METRICS_SHUTDOWN_TIMEOUT
    bounds it; the export itself gives up after the 2 s default timeout)."""
    caplog.set_level(logging.CRITICAL)
    with receiver(kind) as server:
        monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", server.url("/v1/metrics"))
        for bound in (DEFAULT_SHUTDOWN_TIMEOUT_S, 1.0):
            t = telemetry.setup(registry=Registry(), serve=False, runtime_metrics=False, shutdown_timeout=bound)
            t.recorders.runs.record("build", is_ci=False, status=0, duration_ms=120.0)
            started = time.monotonic()
            telemetry.shutdown()
            elapsed = time.monotonic() - started
            assert elapsed <= min(bound, DEFAULT_EXPORT_TIMEOUT_S) + SLACK_S, (kind, bound, elapsed)
