"""Inbound HTTP for WSGI apps (Flask, Django, any PEP 3333 app): the same request metrics, request ids and
access log lines as the ASGI middleware (``telemetry.instrumentation.inbound`` records both).

``WSGIMiddleware(app)`` wraps a WSGI app. The route template comes from ``route_of(environ)``, called when
the app starts its response (routing is done by then); the default reads ``environ[ROUTE_KEY]``, which
``telemetry.instrumentation.django.RouteMiddleware`` writes once Django resolved the URL;
``telemetry.instrumentation.flask.instrument(app)`` passes a ``route_of`` that reads Flask's url rule. A
request without a route is labelled ``UNMATCHED_ROUTE``.

The request is counted and its access line written once the server has iterated over the whole response
body or closed it (PEP 3333's ``close()``; asgiref's ``WsgiToAsgi`` never calls it), so the duration
includes sending the body. The request's log context (``telemetry.logs``)
holds while the app runs and while the line is written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from telemetry.context import enter_request, exit_request
from telemetry.instrumentation.inbound import (
    REQUEST_ID_HEADER,
    UNMATCHED_ROUTE,
    InboundRecorder,
    method_label,
    request_id,
)
from telemetry.registry import Registry
from telemetry.types import Environ, StartResponse, WSGIApp

# Where framework integrations leave the matched route's template for the middleware.
ROUTE_KEY = "telemetry.route"


def route_from_environ(environ: Environ) -> str | None:
    """The template a framework integration wrote to ``environ[ROUTE_KEY]``, prefixed by ``SCRIPT_NAME``
    (the path the app is mounted under, e.g. by werkzeug's ``DispatcherMiddleware``); None when none was."""
    route = environ.get(ROUTE_KEY)
    return mounted(environ, route) if isinstance(route, str) else None


def mounted(environ: Environ, template: str) -> str:
    """``template`` (relative to the app) with the app's ``SCRIPT_NAME`` in front."""
    script = environ.get("SCRIPT_NAME", "").rstrip("/")
    return script + template if script else template


def set_route(environ: Environ, template: str) -> None:
    """Note the matched route's template (relative to the app, starting with ``/``) for the middleware."""
    environ[ROUTE_KEY] = template if template.startswith("/") else "/" + template


def _environ_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


class WSGIMiddleware:
    """Metrics, request id and access log for every request of a WSGI app."""

    def __init__(self, app: WSGIApp, *, registry: Registry | None = None,
                 route_of: Callable[[Environ], str | None] = route_from_environ,
                 logger: logging.Logger | None = None, access_log: bool = True,
                 request_id_header: str = REQUEST_ID_HEADER, name_spans: bool = True) -> None:
        self.app = app
        self._recorder = InboundRecorder(registry, logger=logger, access_log=access_log, name_spans=name_spans)
        self._route_of = route_of
        self._environ_key = _environ_key(request_id_header)
        self._header = request_id_header

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start = time.perf_counter()
        method = method_label(environ.get("REQUEST_METHOD", "GET"))
        rid = request_id(environ.get(self._environ_key))
        fields: dict[str, Any] = {"request_id": rid, "method": method}
        response = _Response(self, environ, method, fields, start)

        def start_with_id(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            response.status = int(status[:3])
            if response.route is None:  # routing is done when the app starts its response
                response.route = self._route(environ, method)
            return start_response(status, [*headers, (self._header, rid)], exc_info)

        token = enter_request(fields)
        try:
            response.body = self.app(environ, start_with_id)
        except BaseException:
            response.finish()
            raise
        finally:
            exit_request(token)
        return response

    def _route(self, environ: Environ, method: str) -> str:
        route = self._route_of(environ) or UNMATCHED_ROUTE
        self._recorder.name_span(method, route)
        return route


class _Response:
    """The app's response body, passed through; recording happens at ``close()`` (or when the app raised)."""

    __slots__ = ("body", "environ", "fields", "finished", "method", "middleware", "route", "start", "status")

    def __init__(self, middleware: WSGIMiddleware, environ: Environ, method: str, fields: dict[str, Any],
                 start: float) -> None:
        self.middleware = middleware
        self.environ = environ
        self.method = method
        self.fields = fields
        self.start = start
        self.status = 500  # what the client sees when the app raises before it responds
        self.route: str | None = None
        self.body: Iterable[bytes] = ()
        self.finished = False

    def __iter__(self) -> Iterator[bytes]:
        token = enter_request(self.fields)  # a streamed body's log lines carry the request's fields
        try:
            yield from self.body
        finally:
            exit_request(token)
            # Recorded here too: some servers never call close() (asgiref's WsgiToAsgi), and then the request
            # would never be counted. A later close() still closes the app's body.
            self.finish()

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.finish()

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        elapsed = time.perf_counter() - self.start
        if self.route is None:
            self.route = self.middleware._route(self.environ, self.method)
        token = enter_request(self.fields)
        try:
            self.middleware._recorder.record(self.method, self.route, self.status, elapsed, self.fields)
        finally:
            exit_request(token)


def instrument_wsgi(app: WSGIApp, *, registry: Registry | None = None,
                    route_of: Callable[[Environ], str | None] = route_from_environ,
                    access_log: bool = True) -> WSGIApp:
    """``app`` wrapped in ``WSGIMiddleware``. For Flask use ``telemetry.instrumentation.flask.instrument``;
    for Django wrap ``get_wsgi_application()`` and add ``RouteMiddleware`` (``telemetry.instrumentation.django``)."""
    return WSGIMiddleware(app, registry=registry, route_of=route_of, access_log=access_log)
