"""Inbound HTTP for ASGI apps: request metrics, request ids, access log lines, and (with OpenTelemetry's ASGI
middleware) a server span per request named after the route template.

``HTTPServerMiddleware`` records ``http_requests_total{method,route,status}`` and
``http_request_duration_seconds{method,route}`` where ``route`` is the matched route *template*
(``/api/projects/{account}/{project}/runs``), never the raw path: paths no route matches share the label
``UNMATCHED_ROUTE``. It reads the template from ``scope["route"]``, which Starlette's router sets; other
frameworks can pass ``route_of``. It also takes the request id from ``X-Request-ID`` (or makes one), returns it
on the response, binds it to the request's log context (``telemetry.logs``) and writes one access log line
per request with method, route, status and duration_ms.

``instrument_asgi(app)`` wraps ``app`` in ``HTTPServerMiddleware`` and, when tracing is configured, in
OpenTelemetry's ``OpenTelemetryMiddleware`` outside it (so the server span is current while the request runs
and its trace id reaches the log lines).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from opentelemetry import trace

from telemetry.catalogue import INBOUND_DURATION, INBOUND_REQUESTS
from telemetry.context import enter_request, exit_request
from telemetry.logs import emit
from telemetry.registry import CounterChild, HistogramChild, Registry, default_registry

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The route label of every request no route matched (404s for unknown paths): one series, not one per path.
UNMATCHED_ROUTE = "unmatched"
# Methods outside this set share one label value, as in OpenTelemetry's HTTP conventions.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
OTHER_METHOD = "_OTHER"
REQUEST_ID_HEADER = "x-request-id"
# A client's request id is reused only when it is short and plain, so it cannot forge log fields.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

_access_log = logging.getLogger("telemetry.access")


def route_template(scope: Scope) -> str | None:
    """The matched route's template from ``scope["route"]`` (Starlette), or None when nothing matched."""
    route = scope.get("route")
    if route is None:
        return None
    if isinstance(route, str):
        return route
    for attr in ("path_format", "path"):  # path_format drops Starlette's ":path"-style converters
        value = getattr(route, attr, None)
        if isinstance(value, str) and value:
            return value
    return None


class HTTPServerMiddleware:
    """Metrics, request id and access log for every HTTP request; other ASGI scopes pass through.

    It runs on every request, so its cost is kept to a few microseconds plus the log line: the two series of a
    (method, route, status) are resolved once and cached, request ids come from ``os.urandom``, and the access
    log line goes through ``telemetry.logs.emit``.
    """

    _CACHE_LIMIT = 4096

    def __init__(self, app: ASGIApp, *, registry: Registry | None = None,
                 route_of: Callable[[Scope], str | None] = route_template, logger: logging.Logger | None = None,
                 access_log: bool = True, request_id_header: str = REQUEST_ID_HEADER,
                 name_spans: bool = True) -> None:
        self.app = app
        registry = registry or default_registry()
        self._requests = registry.counter(INBOUND_REQUESTS)
        self._duration = registry.histogram(INBOUND_DURATION)
        self._series: dict[tuple[str, str, int], tuple[CounterChild, HistogramChild]] = {}
        self._route_of = route_of
        self._logger = logger or _access_log
        self._access_log = access_log
        self._name_spans = name_spans
        self._header = request_id_header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        method = scope.get("method", "GET")
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD
        request_id = self._request_id(scope.get("headers", ()))
        status = 500  # what the client sees when the app raises before it responds
        header = (self._header, request_id.encode("latin-1"))
        route: str | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status, route
            if message["type"] == "http.response.start":
                status = message["status"]
                route = self._route(scope, method)
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        fields: dict[str, Any] = {"request_id": request_id, "method": method}
        token = enter_request(fields)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            if route is None:  # the app never responded
                route = self._route(scope, method)
            key = (method, route, status)
            pair = self._series.get(key)
            if pair is None:
                pair = (self._requests.labels(method, route, str(status)), self._duration.labels(method, route))
                if len(self._series) < self._CACHE_LIMIT:
                    self._series[key] = pair
            pair[0].inc()
            pair[1].observe(elapsed)
            if self._access_log:
                fields["route"] = route
                fields["status"] = status
                fields["duration_ms"] = round(elapsed * 1000, 3)
                emit(self._logger, logging.ERROR if status >= 500 else logging.INFO, "request completed")
            exit_request(token)

    def _route(self, scope: Scope, method: str) -> str:
        route = self._route_of(scope) or UNMATCHED_ROUTE
        if self._name_spans:
            # The server span ends as soon as the last body chunk is sent, so it is renamed at the response's
            # start, when routing has long been done.
            span = trace.get_current_span()
            if span.is_recording():
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
        return route

    def _request_id(self, headers: Iterable[tuple[bytes, bytes]]) -> str:
        for name, value in headers:
            if name == self._header:
                candidate = value.decode("latin-1")
                if _REQUEST_ID.fullmatch(candidate):
                    return candidate
                break
        return os.urandom(16).hex()


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
    ``http_request_duration_seconds`` already measure the same requests at a fraction of the cost.
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
