"""The /metrics server against misbehaving clients, over real sockets on loopback: slow heads, idle keep-alive,
the connection cap, bodies, aborted scrapes, Accept-Encoding q-values, the auth scheme's case, bursts."""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from telemetry.exposition.server import MAX_BODY, MetricsServer
from telemetry.testing import wait_for


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    s = MetricsServer(lambda: "m_total 1\n" * 500, host="127.0.0.1", port=0, request_timeout=1.0,
                      idle_timeout=1.0, max_connections=8)
    yield s
    s.stop()


def raw(server: MetricsServer, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    if data:
        sock.sendall(data)
    return sock


def read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def test_slowloris_connections_are_cut_by_the_whole_head_timeout(server: MetricsServer) -> None:
    socks = [raw(server, b"GET /metrics HTTP/1.1\r\n") for _ in range(6)]
    start = time.monotonic()
    for _ in range(4):  # a byte every 0.3 s: each recv is quick, the head never completes
        time.sleep(0.3)
        for s in socks:
            with contextlib.suppress(OSError):
                s.send(b"X")
    wait_for(lambda: server.open_connections == 0, timeout=2.5)
    assert time.monotonic() - start < 2.5
    wait_for(lambda: not [t for t in threading.enumerate() if t.name == "telemetry-metrics-conn"], timeout=1)
    for s in socks:
        s.close()


def test_idle_keep_alive_connection_is_closed(server: MetricsServer) -> None:
    sock = raw(server, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.1)
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    start = time.monotonic()
    wait_for(lambda: server.open_connections == 0, timeout=2.5)
    assert 0.5 < time.monotonic() - start < 2.5
    sock.close()


def test_connections_beyond_the_cap_get_503(server: MetricsServer) -> None:
    held = [raw(server) for _ in range(8)]
    wait_for(lambda: server.open_connections == 8)
    extra = raw(server)
    reply = read_all(extra)
    assert reply.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in reply
    for s in [*held, extra]:
        s.close()


def test_get_with_a_body_is_one_request(server: MetricsServer) -> None:
    body = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
    sock = raw(server, b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    time.sleep(0.3)
    sock.settimeout(0.5)
    received = sock.recv(1 << 20)
    assert received.count(b"HTTP/1.1 ") == 1 and received.startswith(b"HTTP/1.1 200"), received[:200]
    sock.close()


def test_body_over_64_kib_is_413(server: MetricsServer) -> None:
    sock = raw(server, b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1))
    assert read_all(sock).startswith(b"HTTP/1.1 413")
    sock.close()


def test_unknown_method_is_405(server: MetricsServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("DELETE", "/metrics")
    response = conn.getresponse()
    assert response.status == 405 and response.getheader("Allow") == "GET, HEAD"
    conn.close()


def test_gzip_q_zero_gets_identity(server: MetricsServer) -> None:
    for header, gzipped in (("gzip;q=0", False), ("gzip;q=0.5", True), ("*;q=0", False), ("identity", False)):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/metrics", headers={"Accept-Encoding": header})
        response = conn.getresponse()
        response.read()
        assert (response.getheader("Content-Encoding") == "gzip") is gzipped, header
        conn.close()


def test_bearer_scheme_is_case_insensitive() -> None:
    s = MetricsServer(lambda: "m 1\n", host="127.0.0.1", port=0, bearer_token="s3cret")
    try:
        for scheme in ("bearer", "BEARER", "Bearer"):
            conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)
            conn.request("GET", "/metrics", headers={"Authorization": f"{scheme} s3cret"})
            assert conn.getresponse().status == 200, scheme
            conn.close()
    finally:
        s.stop()


def test_aborted_scrapes_log_one_line_each(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    rendering = threading.Semaphore(0)

    def slow() -> str:
        rendering.release()
        time.sleep(0.03)  # the client resets meanwhile
        return "m_total 1\n" * 20_000

    s = MetricsServer(slow, host="127.0.0.1", port=0)
    try:
        with caplog.at_level(logging.WARNING, logger="telemetry.exposition.server"):
            for _ in range(40):
                sock = raw(s, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                assert rendering.acquire(timeout=5)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()  # reset before the response
            wait_for(lambda: s.open_connections == 0)
        records = [r for r in caplog.records if r.name == "telemetry.exposition.server"]
        assert len(records) == 40 and all(r.levelno == logging.WARNING and not r.exc_info for r in records)
        assert "Traceback" not in capfd.readouterr().err
    finally:
        s.stop()


def test_burst_of_50_connects_is_served_fast(server: MetricsServer) -> None:
    s = MetricsServer(lambda: "m 1\n", host="127.0.0.1", port=0, max_connections=64)
    times: list[float] = []

    def scrape() -> None:
        start = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        conn.request("GET", "/metrics")
        conn.getresponse().read()
        conn.close()
        times.append(time.monotonic() - start)

    try:
        threads = [threading.Thread(target=scrape) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(times) == 50 and max(times) < 0.9, max(times)
    finally:
        s.stop()


def test_stop_closes_open_connections() -> None:
    s = MetricsServer(lambda: "m 1\n", host="127.0.0.1", port=0)
    sock = raw(s, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.recv(65536)
    s.stop()
    sock.settimeout(2)
    assert sock.recv(10) == b""
    sock.close()


def test_gzip_keep_alive_scrapes_do_not_wait_for_delayed_acks() -> None:
    s = MetricsServer(lambda: "m_total 1\n" * 5000, host="127.0.0.1", port=0)
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)
    try:
        start = time.monotonic()
        for _ in range(20):
            conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
            response = conn.getresponse()
            assert response.getheader("Content-Encoding") == "gzip" and response.read()
        assert time.monotonic() - start < 0.4  # 20 delayed ACKs (~40 ms each) would be 0.8 s
    finally:
        conn.close()
        s.stop()
