"""FastAPI on a real server: an app wrapped by ``instrument_asgi``, with an included router and mounted FastAPI
and Starlette sub-apps, served by uvicorn on a free loopback port and scraped over HTTP. Route labels keep
router and mount prefixes; FastAPI's own ``http.server.*`` metrics, which it records on the package's
MeterProvider, are left out of /metrics by default (so no request is counted twice) and kept with
``http_server_metrics=True``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from telemetry.instrumentation.asgi import instrument_asgi
from telemetry.setup import Telemetry
from telemetry.testing import isolated, parse_exposition, sample_total, wait_for
from tests.conftest import free_port


async def starlette_item(request: Request) -> Response:
    return JSONResponse(request.path_params)


def make_app(t: Telemetry) -> FastAPI:
    # FastAPI records its own metrics on the global MeterProvider, or on the one it is given: given here, as
    # OpenTelemetry lets a process set its global once and the test suite shares the process.
    app = FastAPI(telemetry={"meter_provider": t.meter_provider, "tracing": False, "logs": False})
    sub = FastAPI(telemetry={"meter_provider": t.meter_provider, "tracing": False, "logs": False})
    runs = APIRouter(prefix="/runs")

    @app.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @runs.get("/{run_id}")
    def run(run_id: str) -> dict[str, str]:
        return {"run_id": run_id}

    @sub.get("/x/{xid}")
    def sub_x(xid: int) -> dict[str, int]:
        return {"xid": xid}

    app.include_router(runs)
    app.mount("/sub", sub)
    app.mount("/st", Starlette(routes=[Route("/y/{yid}", starlette_item)]))
    return app


@pytest.fixture
def serve() -> Iterator[object]:
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(t: Telemetry) -> str:
        port = free_port()
        app = instrument_asgi(make_app(t), registry=t.registry, spans=False)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                               access_log=False, lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        wait_for(lambda: server.started, what="uvicorn to start")
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def traffic(url: str) -> None:
    with httpx.Client(base_url=url) as client:
        for i in range(3):
            assert client.get(f"/items/{i}").json() == {"item_id": i}
        assert client.get("/runs/abc").json() == {"run_id": "abc"}
        assert client.get("/sub/x/7").json() == {"xid": 7}
        assert client.get("/sub/x/8").status_code == 200
        assert client.get("/st/y/1").json() == {"yid": "1"}
        assert client.get("/items/not-a-number").status_code == 422
    time.sleep(0.05)  # the last request is recorded just after its response went out


def scrape(t: Telemetry) -> str:
    assert t.metrics_url
    return httpx.get(t.metrics_url).text


def test_route_labels_keep_router_and_mount_prefixes_and_nothing_is_counted_twice(serve: object) -> None:
    with isolated(serve=True, runtime_metrics=False) as t:
        traffic(serve(t))  # type: ignore[operator]
        text = wait_for(lambda: (lambda s: s if sample_total(s, "http_requests_total", route="/st/y/{yid}") else "")(
            scrape(t)), what="the last request on /metrics")
        assert sample_total(text, "http_requests_total", route="/items/{item_id}", status="200") == 3
        assert sample_total(text, "http_requests_total", route="/items/{item_id}", status="422") == 1
        assert sample_total(text, "http_requests_total", route="/runs/{run_id}") == 1
        assert sample_total(text, "http_requests_total", route="/sub/x/{xid}", method="GET", status="200") == 2
        assert sample_total(text, "http_requests_total", route="/st/y/{yid}") == 1
        assert sample_total(text, "http_requests_total") == 8
        assert sample_total(text, "http_request_duration_seconds_count", route="/sub/x/{xid}") == 2
        # FastAPI measured the same 8 requests as http.server.*: not on /metrics by default
        assert not [s.name for s in parse_exposition(text) if s.name.startswith("http_server_")]


def test_fastapis_own_metrics_are_kept_when_asked(serve: object) -> None:
    with isolated(serve=True, runtime_metrics=False, http_server_metrics=True) as t:
        traffic(serve(t))  # type: ignore[operator]
        text = wait_for(lambda: (lambda s: s if sample_total(
            s, "http_server_request_duration_seconds_count") >= 8 else "")(scrape(t)), what="FastAPI's metric")
        # FastAPI's label agrees with ours for mounted apps
        assert sample_total(text, "http_server_request_duration_seconds_count", http_route="/sub/x/{xid}") == 2
        assert sample_total(text, "http_requests_total", route="/sub/x/{xid}") == 2

