"""Tiny apps the multi-process tests run under real servers (tests/test_workers.py).

- ``app``: a Starlette app that calls ``telemetry.setup()`` at startup (multi-process directory, metrics host
  and port from the environment) and records one run per request, wrapped in telemetry's inbound HTTP
  middleware so ``http_requests_total`` counts each request too.
- ``wsgi``: a plain WSGI callable for gunicorn's sync workers, recording one run per request.

``GET /pid`` answers the worker's pid (the SIGKILL test picks a worker with it).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import telemetry
from telemetry.instrumentation.asgi import instrument_asgi


def _record() -> None:
    telemetry.setup().recorders.runs.record("build", is_ci=True, status=0, duration_ms=12)


async def run(request: Request) -> Response:
    _record()
    return PlainTextResponse("ok")


async def pid(request: Request) -> Response:
    return PlainTextResponse(str(os.getpid()))


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    telemetry.setup()
    try:
        yield
    finally:
        telemetry.shutdown()


app = instrument_asgi(Starlette(routes=[Route("/run", run), Route("/pid", pid)], lifespan=lifespan),
                      access_log=False)


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/pid":
        body = str(os.getpid()).encode()
    else:
        _record()
        body = b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
