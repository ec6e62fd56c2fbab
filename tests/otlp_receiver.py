"""A real OTLP/HTTP metrics receiver on loopback for tests.

``OtlpReceiver`` is a threaded HTTP server on 127.0.0.1 (port 0: the kernel picks a free one) that accepts
``POST /v1/metrics``, un-gzips the body when ``Content-Encoding: gzip`` says so, decodes it with
opentelemetry-proto's ``ExportMetricsServiceRequest`` (the stock ``OTLPMetricExporter``'s wire format), keeps
every request and answers. What it answers is its ``mode``, which may change while it runs:

- ``"ok"``: 200 with an empty ``ExportMetricsServiceResponse`` (the default);
- ``"unavailable"``: 503 (a retryable status: the exporter backs off and tries again);
- ``"hang"``: never answers; the handler waits until the receiver is closed (or ``release()``), so an
  exporter's timeout, or a shutdown's, is what ends the request.

Every request is recorded, whatever the mode, as a ``Received`` (path, headers, raw body, decoded request,
status answered or None). Use it as a context manager, or call ``close()``: hanging requests are released,
the server thread stopped and the socket closed.

``metrics_by_name(request)`` and ``attributes(kv_list)`` turn the protobuf into plain Python for assertions.
"""

from __future__ import annotations

import gzip
import http.server
import threading
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

Mode = Literal["ok", "unavailable", "hang"]
METRICS_PATH = "/v1/metrics"


@dataclass
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes  # as decoded from Content-Encoding (the protobuf bytes)
    request: ExportMetricsServiceRequest | None  # None when the path or the body was not OTLP metrics
    status: int | None = None  # what was answered; None while (or because) a hanging request got no answer


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read the requests, not logs
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if not size:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            raw = b"".join(parts)
        else:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if encoding == "gzip":
            return gzip.decompress(raw)
        if encoding == "deflate":
            return zlib.decompress(raw)
        return raw

    def do_POST(self) -> None:
        receiver = self.server.receiver
        path = self.path.split("?", 1)[0]
        body = self._body()
        request: ExportMetricsServiceRequest | None = None
        if path == METRICS_PATH:
            request = ExportMetricsServiceRequest()
            try:
                request.ParseFromString(body)
            except Exception:  # a body that is not the protobuf: recorded, answered 400
                request = None
        received = Received(path, {k.lower(): v for k, v in self.headers.items()}, body, request)
        mode = receiver.mode
        receiver._record(received)
        if mode == "hang":
            receiver._released.wait()
            self.close_connection = True
            return
        if path != METRICS_PATH:
            status, payload = 404, b""
        elif request is None:
            status, payload = 400, b""
        elif mode == "unavailable":
            status, payload = 503, b""
        else:
            status, payload = 200, ExportMetricsServiceResponse().SerializeToString()
        received.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self.send_response(405)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver
        super().__init__(("127.0.0.1", 0), _Handler)


class OtlpReceiver:
    """A loopback OTLP/HTTP metrics receiver; see the module docstring."""

    def __init__(self, mode: Mode = "ok") -> None:
        self.mode: Mode = mode
        self.received: list[Received] = []
        self._cond = threading.Condition()
        self._released = threading.Event()
        self._server = _Server(self)
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_url = self.url + METRICS_PATH
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="otlp-receiver", daemon=True)
        self._thread.start()
        self._closed = False

    # -- what was received --------------------------------------------------------------------------------
    def _record(self, received: Received) -> None:
        with self._cond:
            self.received.append(received)
            self._cond.notify_all()

    @property
    def requests(self) -> list[ExportMetricsServiceRequest]:
        """The decoded OTLP metrics requests, oldest first."""
        with self._cond:
            return [r.request for r in self.received if r.request is not None]

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> list[ExportMetricsServiceRequest]:
        """Wait until at least ``count`` OTLP metrics requests arrived; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r.request for r in self.received if r.request is not None]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(got)} OTLP metrics request(s) received in {timeout} s, "
                                         f"wanted {count}")
                self._cond.wait(left)

    def clear(self) -> None:
        """Forget what was received (one receiver reused across test cases)."""
        with self._cond:
            self.received.clear()

    # -- lifecycle ----------------------------------------------------------------------------------------
    def release(self) -> None:
        """Let hanging requests end (without an answer: their connection is closed)."""
        self._released.set()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> OtlpReceiver:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# -- turning the protobuf into plain Python -----------------------------------------------------------------

def any_value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return tuple(any_value(v) for v in value.array_value.values)
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, which)


def attributes(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


def metrics_by_name(request: ExportMetricsServiceRequest, scope: str | None = None) -> dict[str, Metric]:
    """Every metric in the request by name (of one instrumentation scope when ``scope`` is given)."""
    return {m.name: m for rm in request.resource_metrics for sm in rm.scope_metrics
            if scope is None or sm.scope.name == scope for m in sm.metrics}


def resource_attributes(request: ExportMetricsServiceRequest) -> dict[str, Any]:
    [resource_metrics] = request.resource_metrics
    return attributes(resource_metrics.resource.attributes)
