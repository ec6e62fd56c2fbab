"""``/metrics`` as mountable ASGI and WSGI apps, for services that serve metrics on their own port: the same
exposition, auth, gzip, HEAD and 405 as the built-in server (both answer through ``Endpoint``).

    Route("/metrics", metrics_asgi_app(telemetry.setup(serve=False)))   # in a Starlette app's routes
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from http import HTTPStatus
from typing import Protocol

from telemetry.exposition.endpoint import Endpoint
from telemetry.types import ASGIApp, Environ, Receive, Scope, Send, StartResponse, WSGIApp


class _Source(Protocol):
    def scrape(self) -> str: ...


def _endpoint(source: _Source, bearer_token: str | None, basic_auth: str | None) -> Endpoint:
    settings = getattr(source, "settings", None)  # a Telemetry brings its auth settings
    if bearer_token is None:
        bearer_token = settings.metrics_bearer_token if settings is not None else ""
    if basic_auth is None:
        basic_auth = settings.metrics_basic_auth if settings is not None and not bearer_token else ""
    return Endpoint(source.scrape, path=None, bearer_token=bearer_token, basic_auth=basic_auth)


def metrics_asgi_app(source: _Source, *, bearer_token: str | None = None,
                     basic_auth: str | None = None) -> ASGIApp:
    """An ASGI app answering every path with ``source.scrape()`` (a ``Telemetry`` or a ``PrometheusReader``).
    Auth defaults to the Telemetry's settings. Rendering runs in a worker thread, off the event loop."""
    return _ASGI(_endpoint(source, bearer_token, basic_auth))


class _ASGI:
    """An object, not a function: routers (Starlette's ``Route``) take a plain function for a request handler."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self._endpoint
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        response = await asyncio.to_thread(endpoint.respond, scope["method"], scope.get("path", "/"),
                                           authorization=headers.get("authorization", ""),
                                           accept_encoding=headers.get("accept-encoding", ""))
        await send({"type": "http.response.start", "status": response.status,
                    "headers": [(k.lower().encode(), v.encode()) for k, v in response.headers]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else response.body})


def metrics_wsgi_app(source: _Source, *, bearer_token: str | None = None,
                     basic_auth: str | None = None) -> WSGIApp:
    """A WSGI app answering every path with ``source.scrape()``; auth as for ``metrics_asgi_app``."""
    endpoint = _endpoint(source, bearer_token, basic_auth)

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        response = endpoint.respond(method, environ.get("PATH_INFO", "/"),
                                    authorization=environ.get("HTTP_AUTHORIZATION", ""),
                                    accept_encoding=environ.get("HTTP_ACCEPT_ENCODING", ""))
        start_response(f"{response.status} {HTTPStatus(response.status).phrase}", list(response.headers))
        return [] if method == "HEAD" else [response.body]

    return app
