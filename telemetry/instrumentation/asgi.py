"""Inbound HTTP for ASGI apps: request metrics, request ids, access log lines, and (with OpenTelemetry's ASGI
middleware) a server span per request named after the route template.

``HTTPServerMiddleware`` records ``http_requests_total{method,route,status}`` and
``http_request_duration_seconds{method,route}`` where ``route`` is the matched route *template*
(``/api/projects/{account}/{project}/runs``), never the raw path: paths no route matches share the label
``UNMATCHED_ROUTE``. It reads the template from ``scope["route"]``, which Starlette's and FastAPI's routers
set, with the templates of the mounts the request went through in front (``route_template``); other
frameworks can pass ``route_of``. It also takes the request id from ``X-Request-ID`` (or makes one), returns it
on the response, binds it to the request's log context (``telemetry.logs``) and writes one access log line
per request with method, route, status and duration_ms.

``instrument_asgi(app)`` wraps ``app`` in ``HTTPServerMiddleware`` and, when tracing is configured, in
OpenTelemetry's ``OpenTelemetryMiddleware`` outside it (so the server span is current while the request runs
and its trace id reaches the log lines).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry import trace

from telemetry.context import enter_request, exit_request
from telemetry.instrumentation.inbound import (
    KNOWN_METHODS,
    OTHER_METHOD,
    REQUEST_ID_HEADER,
    UNMATCHED_ROUTE,
    InboundRecorder,
    method_label,
    request_id,
)
from telemetry.registry import Registry
from telemetry.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["OTHER_METHOD", "UNMATCHED_ROUTE", "ASGIApp", "HTTPServerMiddleware", "Message", "Receive", "Scope",
           "Send", "instrument_asgi", "route_template"]


def _template(route: Any) -> str | None:
    if isinstance(route, str):
        return route
    for attr in ("path_format", "path"):  # path_format drops Starlette's ":path"-style converters
        value = getattr(route, attr, None)
        if isinstance(value, str) and value:
            return value
    return None


def _mount_prefix(routes: Sequence[Any], probe: dict[str, Any], target: Any, prefix: str) -> str | None:
    """The mount templates from ``routes`` down to ``target``, found as Starlette's router finds a route: the
    first ``Mount`` that matches the path is the one the request went into (a sub-app may be mounted twice)."""
    from starlette.routing import Match, Mount

    for route in routes:
        if route is target:
            return prefix
        if isinstance(route, Mount):
            match, child = route.matches(probe)
            if match is Match.FULL:
                inner = prefix + route.path_format.removesuffix("/{path}")
                return _mount_prefix(route.routes, {**probe, **child}, target, inner)
        elif isinstance(getattr(route, "routes", None), list):  # FastAPI's included routers: no path of their own
            found = _mount_prefix(route.routes, probe, target, prefix)
            if found is not None:
                return found
    return None


# (id(route), app root path, root_path) -> (route, mount prefix): a mount without parameters has one
# root_path, so its requests walk the routes once; mounts with parameters fill the cache up to its limit and
# walk after that. Keyed by id because Starlette's routes are not hashable; the value keeps the route alive so
# its id is not reused.
_prefixes: dict[tuple[int, str, str], tuple[Any, str | None]] = {}
_PREFIX_CACHE_LIMIT = 4096


def route_template(scope: Scope) -> str | None:
    """The matched route's template from ``scope["route"]`` (Starlette and FastAPI set it), prefixed by the
    templates of the mounts the request went through (``app.mount("/sub/{tenant}", sub)`` gives
    ``/sub/{tenant}/x/{xid}``) and by the application's own ``root_path``; None when nothing matched.

    Starlette records the innermost route only, and a mount's path in ``root_path`` with its raw values, so
    for a mounted request the mounts are found again from the outermost router (``scope["router"]``) down;
    requests outside mounts take none of that."""
    template = _template(scope.get("route"))
    if template is None:
        return None
    root_path: str = scope.get("root_path", "")
    base: str = scope.get("app_root_path", root_path)  # root_path before the first mount (Starlette sets it)
    if root_path == base:
        return base.rstrip("/") + template if base else template
    route = scope["route"]
    key = (id(route), base, root_path)
    cached = _prefixes.get(key)
    if cached is not None:
        prefix = cached[1]
    else:
        prefix = _walk(scope, base)
        if len(_prefixes) < _PREFIX_CACHE_LIMIT:
            _prefixes[key] = (route, prefix)
    return (prefix if prefix is not None else base.rstrip("/")) + template


def _walk(scope: Scope, base: str) -> str | None:
    routes = getattr(scope.get("router"), "routes", None)
    if routes is None:
        return None
    probe = {"type": scope.get("type", "http"), "path": scope.get("path", ""), "root_path": base,
             "method": scope.get("method", "GET"), "path_params": {}}
    try:
        return _mount_prefix(routes, probe, scope["route"], base.rstrip("/"))
    except Exception:  # a router this does not understand: the route's own template, without the mounts
        return None


class HTTPServerMiddleware:
    """Metrics, request id and access log for every HTTP request; other ASGI scopes pass through.

    It runs on every request, so its cost is kept to a few microseconds plus the log line (see
    ``telemetry.instrumentation.inbound.InboundRecorder``).
    """

    def __init__(self, app: ASGIApp, *, registry: Registry | None = None,
                 route_of: Callable[[Scope], str | None] = route_template, logger: logging.Logger | None = None,
                 access_log: bool = True, request_id_header: str = REQUEST_ID_HEADER,
                 name_spans: bool = True) -> None:
        self.app = app
        self._recorder = InboundRecorder(registry, logger=logger, access_log=access_log, name_spans=name_spans)
        self._route_of = route_of
        self._header = request_id_header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        method = method_label(scope.get("method", "GET"))
        rid = request_id(self._given_id(scope.get("headers", ())))
        status = 500  # what the client sees when the app raises before it responds
        header = (self._header, rid.encode("latin-1"))
        route: str | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status, route
            if message["type"] == "http.response.start":
                status = message["status"]
                route = self._route(scope, method)
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        fields: dict[str, Any] = {"request_id": rid, "method": method}
        token = enter_request(fields)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            if route is None:  # the app never responded
                route = self._route(scope, method)
            self._recorder.record(method, route, status, elapsed, fields)
            exit_request(token)

    def _route(self, scope: Scope, method: str) -> str:
        route = self._route_of(scope) or UNMATCHED_ROUTE
        # The server span ends as soon as the last body chunk is sent, so it is renamed at the response's
        # start, when routing has long been done.
        self._recorder.name_span(method, route)
        return route

    def _given_id(self, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        for name, value in headers:
            if name == self._header:
                return value.decode("latin-1")
        return None


def _span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    # Named by method until routing; HTTPServerMiddleware renames it "METHOD /route/{template}" — never the
    # raw path, which would make one span name per URL.
    method = scope.get("method", "HTTP")
    return (method if method in KNOWN_METHODS else "HTTP"), {}


def _tracing_configured(tracer_provider: Any) -> bool:
    if tracer_provider is not None:
        return True
    provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def instrument_asgi(app: ASGIApp, *, registry: Registry | None = None, tracer_provider: Any = None,
                    meter_provider: Any = None, spans: bool | None = None, excluded_urls: str | None = None,
                    route_of: Callable[[Scope], str | None] = route_template, access_log: bool = True) -> ASGIApp:
    """``app`` wrapped for inbound metrics, request ids and access logs, and for server spans.

    ``spans``: wrap in OpenTelemetry's ``OpenTelemetryMiddleware`` too; None (the default) does so only when a
    tracer provider is passed or an SDK one is installed globally — a span nobody exports costs more than all
    the rest of the instrumentation (see docs/service.md). ``meter_provider``: where OpenTelemetry's own
    ``http.server.*`` metrics go; None (the default) drops them, since ``http_requests_total`` and
    ``http_request_duration_seconds`` already measure the same requests at a fraction of the cost (the
    package's own provider also drops them unless ``TUIST_METRICS_HTTP_SERVER_METRICS`` is set).
    ``excluded_urls`` (comma-separated regexes) get no span; they are still counted and logged.
    """
    with_spans = spans if spans is not None else _tracing_configured(tracer_provider)
    inner: ASGIApp = HTTPServerMiddleware(app, registry=registry, route_of=route_of, access_log=access_log,
                                          name_spans=with_spans)
    if not with_spans:
        return inner
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.metrics import NoOpMeterProvider

    wrapped: ASGIApp = OpenTelemetryMiddleware(inner, excluded_urls=excluded_urls,
                                               default_span_details=_span_details,
                                               tracer_provider=tracer_provider,
                                               meter_provider=meter_provider or NoOpMeterProvider(),
                                               exclude_spans=["receive", "send"])
    return wrapped
