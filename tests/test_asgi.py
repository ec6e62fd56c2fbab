"""Inbound HTTP instrumentation on a real server: a Starlette app wrapped by ``instrument_asgi`` served by
uvicorn on a free loopback port. Route templates (never raw paths), one label for unmatched paths, status
counts including 500s, duration buckets, request ids, span names, and log lines carrying the span's ids."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from telemetry import logs
from telemetry.instrumentation.asgi import OTHER_METHOD, UNMATCHED_ROUTE, HTTPServerMiddleware, instrument_asgi
from telemetry.registry import Registry
from telemetry.testing import wait_for
from tests.conftest import free_port

T = TypeVar("T")


async def item(request: Request) -> Response:
    logging.getLogger("test.asgi.app").info("handling item", extra={"item": request.path_params["item_id"]})
    return JSONResponse({"id": request.path_params["item_id"]})


async def file(request: Request) -> Response:
    return PlainTextResponse(request.path_params["path"])


async def slow(request: Request) -> Response:
    await asyncio.sleep(0.06)
    return PlainTextResponse("slow")


async def boom(request: Request) -> Response:
    raise RuntimeError("boom")


async def any_method(request: Request) -> Response:
    return PlainTextResponse(request.method)


async def params(request: Request) -> Response:
    return JSONResponse(request.path_params)


async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await PlainTextResponse("raw")(scope, receive, send)


# Mounted sub-apps: a Starlette app (mounted twice), mounts nested with parameters in their paths, a plain
# ASGI app.
SUB_APP = Starlette(routes=[Route("/x/{xid}", params)])
APP_ROUTES = [Route("/items/{item_id:int}", item), Route("/files/{path:path}", file), Route("/slow", slow),
              Route("/boom", boom), Route("/any", any_method, methods=["GET", "PROPFIND"]),
              Mount("/sub", app=SUB_APP), Mount("/v2", app=SUB_APP),
              Mount("/t/{tenant}", routes=[Mount("/v/{ver:int}", routes=[Route("/y/{yid}", params)])]),
              Mount("/raw", app=raw_app)]


@dataclass
class Served:
    url: str
    registry: Registry
    spans: InMemorySpanExporter
    log: io.StringIO


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    registry = Registry()
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logs.JsonFormatter())
    for name in ("telemetry.access", "test.asgi.app"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    app = instrument_asgi(Starlette(routes=APP_ROUTES), registry=registry, tracer_provider=provider)
    port = free_port()
    # h11 accepts any method token (httptools resets the connection for methods it does not know).
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                                           http="h11", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 10, interval=0.02, what="uvicorn to start")
    yield Served(f"http://127.0.0.1:{port}", registry, spans, log)
    server.should_exit = True
    thread.join(10)
    for name in ("telemetry.access", "test.asgi.app"):
        logging.getLogger(name).removeHandler(handler)
    provider.shutdown()


def eventually(check: Callable[[], T], timeout: float = 5.0) -> T:
    """``check()``'s first truthy result: the server finishes a request's bookkeeping (span end, access log)
    just after the client has its response."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


def records(served: Served, request_id: str, message: str) -> dict[str, Any]:
    def find() -> dict[str, Any]:
        for line in served.log.getvalue().splitlines():
            record = json.loads(line)
            if record.get("request_id") == request_id and record["message"] == message:
                return record  # type: ignore[no-any-return]
        return {}
    found = eventually(find)
    assert found, f"no {message!r} line for request {request_id}"
    return found


def series(registry: Registry, name: str) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for child in registry[name].series():
        out[child.labels] = child.count if hasattr(child, "count") else child.value
    return out


def test_route_templates_and_one_label_for_unmatched_paths(served: Served) -> None:
    with httpx.Client(base_url=served.url) as client:
        for i in (1, 2, 3):
            assert client.get(f"/items/{i}").json() == {"id": i}
        assert client.get("/files/a/b/c.txt").text == "a/b/c.txt"
        assert client.get("/files/x").status_code == 200
        for path in ("/nope", "/nope/2", "/items/not-an-int"):
            assert client.get(path).status_code == 404
        assert client.post("/items/1").status_code == 405
        assert client.request("PROPFIND", "/any").text == "PROPFIND"  # not a method the label set knows
        assert client.get("/boom").status_code == 500  # uvicorn closes the connection after an app error
    # the series are recorded just after the response went out
    requests = eventually(lambda: (lambda r: r if r.get(("GET", "/boom", "500")) == 1 else {})(
        series(served.registry, "http_requests_total")))
    assert requests[("GET", "/items/{item_id}", "200")] == 3
    assert requests[("GET", "/files/{path}", "200")] == 2
    assert requests[("GET", UNMATCHED_ROUTE, "404")] == 3
    assert requests[("POST", "/items/{item_id}", "405")] == 1
    assert requests[("GET", "/boom", "500")] == 1
    assert requests[(OTHER_METHOD, "/any", "200")] == 1
    routes = {labels[1] for labels in requests}
    assert not any(re.search(r"/\d|c\.txt|nope", r) for r in routes), routes
    durations = series(served.registry, "http_request_duration_seconds")
    assert durations[("GET", "/items/{item_id}")] == 3 and durations[("GET", UNMATCHED_ROUTE)] == 3


def test_mounted_apps_keep_their_prefixes(served: Served) -> None:
    with httpx.Client(base_url=served.url) as client:
        assert client.get("/sub/x/1").json() == {"xid": "1"}
        assert client.get("/sub/x/2").status_code == 200
        assert client.get("/v2/x/3").status_code == 200  # the same sub-app under another prefix
        assert client.get("/t/acme/v/2/y/9").json() == {"tenant": "acme", "ver": 2, "yid": "9"}
        assert client.get("/t/other/v/3/y/8").status_code == 200
        assert client.get("/raw/anything/here").text == "raw"
        assert client.get("/sub/nope").status_code == 404
    requests = eventually(lambda: (lambda r: r if r.get(("GET", "/sub/{path}", "404")) == 1 else {})(
        series(served.registry, "http_requests_total")))
    assert requests[("GET", "/sub/x/{xid}", "200")] == 2
    assert requests[("GET", "/v2/x/{xid}", "200")] == 1
    assert requests[("GET", "/t/{tenant}/v/{ver}/y/{yid}", "200")] == 2
    assert requests[("GET", "/raw/{path}", "200")] == 1
    assert not [r for r in requests if "/x/{xid}" in r[1] and not r[1].startswith(("/sub/", "/v2/"))], requests
    durations = series(served.registry, "http_request_duration_seconds")
    assert durations[("GET", "/t/{tenant}/v/{ver}/y/{yid}")] == 2


def test_duration_lands_in_the_right_bucket(served: Served) -> None:
    httpx.get(f"{served.url}/slow")
    found = eventually(lambda: [c for c in served.registry["http_request_duration_seconds"].series()
                                if c.labels[1] == "/slow"])
    [child] = found
    counts, total, count = child.snapshot()
    assert count == 1 and 0.06 <= total < 1.0
    bounds = served.registry["http_request_duration_seconds"].spec.buckets
    assert bounds[:4] == (0.005, 0.01, 0.025, 0.05)
    assert sum(counts[:4]) == 0 and counts[bounds.index(0.1)] + counts[bounds.index(0.25)] == 1


def test_request_ids_and_access_log_with_span_ids(served: Served) -> None:
    served.spans.clear()
    given = httpx.get(f"{served.url}/items/42", headers={"x-request-id": "abc-42"})
    assert given.headers["x-request-id"] == "abc-42"
    generated = httpx.get(f"{served.url}/items/43", headers={"x-request-id": "x" * 200})
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    app_line = records(served, "abc-42", "handling item")
    access = records(served, "abc-42", "request completed")
    assert access["method"] == "GET" and access["route"] == "/items/{item_id}" and access["status"] == 200
    assert access["duration_ms"] > 0 and app_line["item"] == 42
    span = eventually(lambda: next((s for s in served.spans.get_finished_spans() if s.name == "GET /items/{item_id}"
                                    and s.attributes and s.attributes.get("http.route") == "/items/{item_id}"),
                                   None))
    assert span is not None
    trace_id = format(span.context.trace_id, "032x")
    assert access["trace_id"] == app_line["trace_id"] == trace_id
    assert access["span_id"] == app_line["span_id"] == format(span.context.span_id, "016x")


def test_span_names_use_templates_and_there_are_no_send_receive_spans(served: Served) -> None:
    served.spans.clear()
    httpx.get(f"{served.url}/files/secret/path.txt")
    httpx.get(f"{served.url}/missing/123")
    httpx.get(f"{served.url}/boom")
    names = eventually(lambda: len(served.spans.get_finished_spans()) == 3
                       and sorted(s.name for s in served.spans.get_finished_spans()))
    assert names == ["GET /boom", "GET /files/{path}", f"GET {UNMATCHED_ROUTE}"], names
    [boom_span] = [s for s in served.spans.get_finished_spans() if s.name == "GET /boom"]
    assert not boom_span.status.is_ok


def test_error_responses_are_logged_at_error_level(served: Served) -> None:
    httpx.get(f"{served.url}/boom", headers={"x-request-id": "boom-1"})
    access = records(served, "boom-1", "request completed")
    assert access["level"] == "error" and access["status"] == 500


def test_non_http_scopes_pass_through() -> None:
    seen = []

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        seen.append(scope["type"])
    registry = Registry()
    middleware = HTTPServerMiddleware(app, registry=registry)  # type: ignore[arg-type]
    asyncio.run(middleware({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    assert seen == ["lifespan"] and registry["http_requests_total"].series() == []


def test_custom_route_resolver_and_no_access_log() -> None:
    registry = Registry()
    sent: list[dict[str, object]] = []

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    async def send(message: dict[str, object]) -> None:
        sent.append(message)
    middleware = HTTPServerMiddleware(app, registry=registry, route_of=lambda scope: "/custom/{id}",  # type: ignore[arg-type]
                                      access_log=False)
    asyncio.run(middleware({"type": "http", "method": "DELETE", "path": "/custom/9", "headers": []},
                           None, send))  # type: ignore[arg-type]
    assert series(registry, "http_requests_total") == {("DELETE", "/custom/{id}", "204"): 1}
    headers = dict(sent[0]["headers"])  # type: ignore[call-overload]
    assert re.fullmatch(rb"[0-9a-f]{32}", headers[b"x-request-id"])
