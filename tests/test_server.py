"""The /metrics endpoint over real HTTP on loopback: payload, auth, gzip, HEAD, errors, port in use."""

from __future__ import annotations

import base64
import gzip
import http.client
import socket
import threading
from collections.abc import Iterator

import pytest

from telemetry.config import ENV
from telemetry.exposition.reader import PrometheusReader
from telemetry.exposition.render import CONTENT_TYPE
from telemetry.exposition.server import ExpositionError, MetricsServer
from telemetry.registry import Registry

from .conftest import free_port


def get(server: MetricsServer, path: str | None = None, headers: dict[str, str] | None = None,
        method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path or server.path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@pytest.fixture
def registry_server(registry: Registry) -> Iterator[tuple[Registry, MetricsServer]]:
    reader = PrometheusReader(registry)
    server = MetricsServer(reader.scrape, host="127.0.0.1", port=0)
    yield registry, server
    server.stop()


def test_scrape_returns_the_exposition(registry_server: tuple[Registry, MetricsServer]) -> None:
    registry, server = registry_server
    registry.counter("tuist_runs_total").labels("build", True, 0).inc(4)
    assert server.url == f"http://127.0.0.1:{server.port}/metrics"
    status, headers, body = get(server)
    assert status == 200
    assert headers["content-type"] == CONTENT_TYPE
    assert int(headers["content-length"]) == len(body)
    text = body.decode()
    assert 'tuist_runs_total{name="build",is_ci="true",status="0"} 4\n' in text
    assert "# TYPE tuist_http_request_duration_nanosecond histogram\n" in text
    # A query string is fine; other paths are 404 and say where the metrics are.
    assert get(server, "/metrics?x=1")[0] == 200
    status, _, body = get(server, "/")
    assert status == 404 and b"/metrics" in body


def test_every_scrape_is_current(registry_server: tuple[Registry, MetricsServer]) -> None:
    registry, server = registry_server
    child = registry.counter("tuist_cache_uploads_total").labels()
    for n in range(1, 4):
        child.inc()
        assert f"tuist_cache_uploads_total {n}\n".encode() in get(server)[2]


def test_gzip_when_asked(registry_server: tuple[Registry, MetricsServer]) -> None:
    _, server = registry_server
    plain = get(server)[2]
    status, headers, body = get(server, headers={"Accept-Encoding": "gzip, deflate"})
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert int(headers["content-length"]) == len(body) < len(plain)
    assert gzip.decompress(body) == plain
    assert "content-encoding" not in get(server)[1]


def test_head_has_headers_and_no_body(registry_server: tuple[Registry, MetricsServer]) -> None:
    _, server = registry_server
    status, headers, body = get(server, method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 1_000


def test_bearer_token(registry: Registry) -> None:
    server = MetricsServer(PrometheusReader(registry).scrape, host="127.0.0.1", port=0, bearer_token="s3cret")
    try:
        status, headers, body = get(server)
        assert status == 401 and headers["www-authenticate"] == 'Bearer realm="metrics"'
        assert b"tuist_" not in body
        assert get(server, headers={"Authorization": "Bearer wrong"})[0] == 401
        assert get(server, headers={"Authorization": "Basic czNjcmV0"})[0] == 401
        status, _, body = get(server, headers={"Authorization": "Bearer s3cret"})
        assert status == 200 and b"# TYPE tuist_runs_total counter" in body
    finally:
        server.stop()


def test_basic_auth(registry: Registry) -> None:
    server = MetricsServer(PrometheusReader(registry).scrape, host="127.0.0.1", port=0,
                           basic_auth="prom:pa:ss")
    try:
        status, headers, _ = get(server)
        assert status == 401 and headers["www-authenticate"] == 'Basic realm="metrics"'
        good = "Basic " + base64.b64encode(b"prom:pa:ss").decode()
        bad = "Basic " + base64.b64encode(b"prom:nope").decode()
        assert get(server, headers={"Authorization": bad})[0] == 401
        assert get(server, headers={"Authorization": good})[0] == 200
    finally:
        server.stop()


def test_render_failure_is_a_500_and_the_server_keeps_serving(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def render() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return "ok_metric 1\n"

    server = MetricsServer(render, host="127.0.0.1", port=0)
    try:
        status, _, body = get(server)
        assert status == 500 and body == b"rendering metrics failed\n"
        assert "rendering /metrics failed" in caplog.text
        status, _, body = get(server)
        assert (status, body) == (200, b"ok_metric 1\n")
    finally:
        server.stop()


def test_port_in_use_names_the_port_and_the_setting() -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        with pytest.raises(ExpositionError) as err:
            MetricsServer(lambda: "", host="127.0.0.1", port=port)
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message
    assert "Address already in use" in message
    assert ENV["metrics_port"] in message and ENV["metrics_host"] in message


def test_concurrent_scrapes_all_succeed(registry_server: tuple[Registry, MetricsServer]) -> None:
    registry, server = registry_server
    family = registry.counter("tuist_http_request_count")
    for i in range(200):
        family.labels("GET", f"h{i}", "200").inc()
    results: list[int] = []

    def scrape() -> None:
        for _ in range(5):
            status, _, body = get(server)
            results.append(status if body.count(b"tuist_http_request_count{") == 200 else -1)

    threads = [threading.Thread(target=scrape) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 30


def test_stop_releases_the_port(registry: Registry) -> None:
    server = MetricsServer(PrometheusReader(registry).scrape, host="127.0.0.1", port=0)
    port = server.port
    server.stop()
    again = MetricsServer(lambda: "", host="127.0.0.1", port=port)
    again.stop()


def test_unencodable_text_does_not_fail_the_scrape() -> None:
    """An SDK attribute may hold a lone surrogate; the endpoint replaces it rather than failing with a 500."""
    server = MetricsServer(lambda: 'c_total{a="x\ud800y"} 1\n', host="127.0.0.1", port=0)
    try:
        status, _, body = get(server)
        assert (status, body) == (200, b'c_total{a="x?y"} 1\n')
    finally:
        server.stop()
