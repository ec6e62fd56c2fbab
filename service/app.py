"""The ASGI app: routes, the artifact store's presigned endpoints, health probes, JSON errors, and the
middleware stack (OpenTelemetry spans, inbound HTTP metrics, request ids and access logs, page views).

``create_app(service)`` returns the Starlette app wrapped by ``telemetry.instrumentation.asgi``;
``create_app(service, instrument=False)`` is the same app with no telemetry middleware (the benchmark's
baseline). ``create_worker_app()`` is the factory each uvicorn worker of ``python -m service --workers N`` calls:
it starts its own ``Service`` from the environment and closes it when the worker shuts down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import api, pages
from service.components import Service
from service.inputs import MALFORMED, MALFORMED_ERRORS
from service.storage import STORE_PREFIX, StoreError
from telemetry.analytics import PageViewMiddleware
from telemetry.instrumentation.asgi import ASGIApp, Receive, Scope, Send, instrument_asgi
from telemetry.tracing import capture_exception

_log = logging.getLogger("service.app")
PROJECT = "/api/projects/{account}/{project}"
CACHE = PROJECT + "/cache/{hash}"


async def live(request: Request) -> Response:
    status, body = api.service_of(request).health.live()
    return JSONResponse(body, status_code=status)


async def ready(request: Request) -> Response:
    status, body = await api.service_of(request).health.ready_async()
    return JSONResponse(body, status_code=status)


async def store_get(request: Request) -> Response:
    """A presigned download, as the store's HTTP endpoint serves it."""
    store = api.service_of(request).store
    key = request.path_params["key"]
    try:
        store.verify("GET", key, request.query_params)
        data = store.read(key).read_bytes()  # small artifacts: no worker thread needed
    except StoreError as exc:
        return api.error(exc.status, str(exc))
    return Response(data, media_type="application/octet-stream")


async def store_put(request: Request) -> Response:
    """A presigned part upload."""
    store = api.service_of(request).store
    key = request.path_params["key"]
    query = request.query_params
    try:
        store.verify("PUT", key, query)
        part_number = int(query["part_number"])
        store.write_part(key, query["upload_id"], part_number, await request.body())
    except StoreError as exc:
        return api.error(exc.status, str(exc))
    except (KeyError, ValueError):
        return api.error(400, "upload_id and part_number are required")
    return Response(status_code=200)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail, "status": exc.status_code}, status_code=exc.status_code,
                        headers=exc.headers)


async def malformed_input(request: Request, exc: Exception) -> Response:
    """Unusable client input that got past a route's own checks (text that cannot be encoded): 400, not 500."""
    return api.error(400, MALFORMED)


async def server_error(request: Request, exc: Exception) -> Response:
    _log.error("unhandled error", exc_info=exc)
    capture_exception(exc)
    return JSONResponse({"error": "internal error", "status": 500}, status_code=500)


ROUTES = [
    Route("/", pages.home),
    Route("/api/docs", pages.api_docs),
    Route("/dashboard/{account}/{project}", pages.dashboard),
    Route("/health/live", live),
    Route("/health/ready", ready),
    Route("/api/auth/refresh_token", api.refresh_token, methods=["POST"]),
    Route("/api/projects", api.list_projects, methods=["GET"]),
    Route("/api/projects", api.create_project, methods=["POST"]),
    Route(PROJECT + "/runs", api.report_run, methods=["POST"]),
    Route(PROJECT + "/cache", api.delete_cache, methods=["DELETE"]),
    Route(CACHE, api.download_artifact, methods=["GET"]),
    Route(CACHE + "/multipart/start", api.start_upload, methods=["POST"]),
    Route(CACHE + "/multipart/part", api.part_url, methods=["POST"]),
    Route(CACHE + "/multipart/complete", api.complete_upload, methods=["POST"]),
    Route(PROJECT + "/previews", api.upload_preview, methods=["POST"]),
    Route(PROJECT + "/previews/{preview_id}", api.download_preview, methods=["GET"]),
    Route(STORE_PREFIX + "/{key:path}", store_get, methods=["GET"]),
    Route(STORE_PREFIX + "/{key:path}", store_put, methods=["PUT"]),
]


def create_app(service: Service, *, instrument: bool = True) -> ASGIApp:
    """The service's ASGI app; ``instrument=False`` leaves out every telemetry middleware (benchmarks)."""
    # Page views only when analytics are on: a disabled PageViewMiddleware would pass every request through.
    middleware = ([Middleware(PageViewMiddleware, analytics=service.analytics)]
                  if instrument and service.analytics.enabled else [])
    handlers: dict[Any, Any] = {HTTPException: http_error, **{kind: malformed_input for kind in MALFORMED_ERRORS},
                                Exception: server_error}
    app = Starlette(routes=ROUTES, middleware=middleware, exception_handlers=handlers)
    app.state.service = service
    if not instrument:
        return app
    # Spans only when tracing exports them (service.tracing.provider is None otherwise); OpenTelemetry's own
    # http.server.* metrics are left out: http_requests_total and http_request_duration_seconds cover them.
    return instrument_asgi(app, registry=service.telemetry.registry, tracer_provider=service.tracing.provider)


class _ClosesOnShutdown:
    """Answers the ASGI lifespan protocol, calling ``close`` at shutdown; everything else goes to ``app``."""

    def __init__(self, app: ASGIApp, close: Callable[[], None]) -> None:
        self.app, self.close = app, close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_worker_app() -> ASGIApp:
    """One uvicorn worker's app: a ``Service`` from the environment ``python -m service --workers`` set up."""
    from service.settings import ServiceSettings
    from telemetry import logs

    settings = ServiceSettings.from_env()
    logs.configure(settings.log_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    secret = settings.worker_store_secret  # the presigned-URL key python -m service shares with its workers
    service = Service.start(settings, store_secret=bytes.fromhex(secret) if secret else None)
    return _ClosesOnShutdown(create_app(service), service.close)
