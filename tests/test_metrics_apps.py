"""The mountable /metrics apps under real servers on loopback: the ASGI one routed at /metrics in a Starlette
app under uvicorn, the WSGI one under wsgiref. Same exposition, auth, gzip, HEAD and 405 as the server."""

from __future__ import annotations

import gzip
import http.client
import threading
from collections.abc import Iterator
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

from telemetry.exposition import metrics_asgi_app, metrics_wsgi_app
from telemetry.exposition.reader import PrometheusReader
from telemetry.exposition.render import CONTENT_TYPE
from telemetry.registry import Registry
from telemetry.testing import sample_value, wait_for

from .conftest import free_port


def fetch(port: int, method: str = "GET", headers: dict[str, str] | None = None,
            path: str = "/metrics") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@pytest.fixture
def reader(registry: Registry) -> PrometheusReader:
    registry.counter("tuist_cache_uploads_total").labels().inc(3)
    return PrometheusReader(registry)


@pytest.fixture
def asgi_port(reader: PrometheusReader) -> Iterator[int]:
    app = Starlette(routes=[Route("/metrics", metrics_asgi_app(reader, bearer_token="tok"))])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="uvicorn started")
    yield port
    server.should_exit = True
    thread.join(timeout=10)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def wsgi_port(reader: PrometheusReader) -> Iterator[int]:
    httpd = make_server("127.0.0.1", 0, metrics_wsgi_app(reader, bearer_token="tok"), handler_class=_Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_port
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_app_serves_the_exposition_like_the_server(kind: str, request: pytest.FixtureRequest) -> None:
    port = request.getfixturevalue(f"{kind}_port")
    auth = {"Authorization": "bearer tok"}
    status, headers, _ = fetch(port)
    assert status == 401 and headers["www-authenticate"] == 'Bearer realm="metrics"'
    status, headers, body = fetch(port, headers=auth)
    assert status == 200 and headers["content-type"] == CONTENT_TYPE
    assert sample_value(body.decode(), "tuist_cache_uploads_total") == 3
    status, headers, zipped = fetch(port, headers={**auth, "Accept-Encoding": "gzip"})
    assert headers["content-encoding"] == "gzip" and gzip.decompress(zipped) == body
    assert "content-encoding" not in fetch(port, headers={**auth, "Accept-Encoding": "gzip;q=0"})[1]
    status, headers, empty = fetch(port, "HEAD", headers=auth)
    assert status == 200 and empty == b"" and int(headers["content-length"]) == len(body)
    status, headers, _ = fetch(port, "POST", headers=auth)
    assert status == 405 and headers["allow"] == "GET, HEAD"
