"""The analytics upload transport against real loopback servers: posthog-python's wire format, keep-alive reuse,
a connection the host closed behind our back, non-200 answers, and one encoding per batch across retries."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from posthog.request import USER_AGENT, APIError

from telemetry.analytics.transport import Transport


class _Host:
    """An HTTP/1.1 host that keeps connections alive, or drops each one after answering without saying so
    (what a host's idle timeout does to a pooled connection)."""

    def __init__(self, *, drop_after_answer: bool = False, status: int = 200, delay: float = 0.0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.connections = 0  # one handler per accepted connection
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                host.connections += 1

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                host.headers.append({k.lower(): v for k, v in self.headers.items()})
                host.bodies.append(json.loads(gzip.decompress(raw)))
                if delay:
                    time.sleep(delay)  # received, answered late
                payload = b'{"status":1}' if status == 200 else b'{"detail":"nope"}'
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()
                if drop_after_answer:
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def host() -> Iterator[_Host]:
    h = _Host()
    yield h
    h.stop()


MESSAGES = [{"event": "run_report", "distinct_id": "42", "properties": {"name": "build", "ok": True}}]


def test_wire_format_and_keep_alive(host: _Host) -> None:
    transport = Transport("phc_key", host.url)
    transport.post(MESSAGES, timeout=5)
    transport.post(MESSAGES, timeout=5)
    transport.close()
    assert len(host.bodies) == 2
    body = host.bodies[0]
    assert body["batch"] == MESSAGES
    assert body["api_key"] == "phc_key"
    assert set(body) == {"batch", "sent_at", "api_key"}
    headers = host.headers[0]
    assert headers["content-encoding"] == "gzip"
    assert headers["user-agent"] == USER_AGENT
    assert host.connections == 1, "the second batch reused the kept-alive connection"


def test_a_connection_the_host_dropped_is_replaced_without_failing_the_batch() -> None:
    host = _Host(drop_after_answer=True)
    try:
        transport = Transport("k", host.url)
        for _ in range(3):
            transport.post(MESSAGES, timeout=5)
        assert len(host.bodies) == 3
        assert host.connections == 3
    finally:
        host.stop()


def test_non_200_raises_posthogs_api_error_with_the_status() -> None:
    host = _Host(status=503)
    try:
        with pytest.raises(APIError) as raised:
            Transport("k", host.url).post(MESSAGES, timeout=5)
        assert raised.value.status == 503
    finally:
        host.stop()


def test_a_retry_sends_the_same_bytes_without_encoding_again(host: _Host, monkeypatch: pytest.MonkeyPatch) -> None:
    transport = Transport("k", host.url)
    encodes = 0
    original = transport._encode

    def counting(messages: list[dict[str, Any]]) -> bytes:
        nonlocal encodes
        encodes += 1
        return original(messages)

    monkeypatch.setattr(transport, "_encode", counting)
    batch = list(MESSAGES)
    transport.post(batch, timeout=5)
    transport.post(batch, timeout=5)  # the sender's retry passes the same list
    transport.post(list(MESSAGES), timeout=5)  # a new batch
    assert encodes == 2
    assert host.bodies[0]["sent_at"] == host.bodies[1]["sent_at"]


def test_refused_connection_raises_an_os_error() -> None:
    host = _Host()
    url = host.url
    host.stop()
    with pytest.raises(OSError):
        Transport("k", url).post(MESSAGES, timeout=2)


def test_bad_url_is_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match="http"):
        Transport("k", "ftp://127.0.0.1:1")


def test_a_timed_out_batch_is_awaited_again_not_sent_twice() -> None:
    host = _Host(delay=0.6)
    try:
        transport = Transport("k", host.url)
        batch = list(MESSAGES)
        with pytest.raises(TimeoutError):
            transport.post(batch, timeout=0.3)  # sent and received; the answer comes after the timeout
        transport.post(batch, timeout=2)  # the retry reads that answer on the same connection
        assert len(host.bodies) == 1 and host.connections == 1
        transport.post(list(MESSAGES), timeout=2)  # the next batch goes out as usual
        assert len(host.bodies) == 2
    finally:
        host.stop()
