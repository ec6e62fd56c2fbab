"""What the ASGI and WSGI middleware both record for an inbound request: the method label, the request id,
``http_requests_total{method,route,status}`` and ``http_request_duration_seconds{method,route}``, the server
span's name and one access log line.

``route`` is always a route *template* (``/api/projects/{account}/{project}/runs``), never the raw path; a
request no route matched is labelled ``UNMATCHED_ROUTE``. How the template is found is the framework's side
(``telemetry.instrumentation.asgi``, ``.wsgi``, ``.flask``, ``.django``); this module only records it.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from opentelemetry import trace

from telemetry.catalogue import INBOUND_DURATION, INBOUND_REQUESTS
from telemetry.logs import emit
from telemetry.registry import CounterChild, HistogramChild, Registry, default_registry

# The route label of every request no route matched (404s for unknown paths): one series, not one per path.
UNMATCHED_ROUTE = "unmatched"
# Methods outside this set share one label value, as in OpenTelemetry's HTTP conventions.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
OTHER_METHOD = "_OTHER"
REQUEST_ID_HEADER = "x-request-id"
# A client's request id is reused only when it is short and plain, so it cannot forge log fields.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

ACCESS_LOGGER = "telemetry.access"


def method_label(method: str) -> str:
    """The ``method`` label: the request method, or ``OTHER_METHOD`` for one outside ``KNOWN_METHODS``."""
    return method if method in KNOWN_METHODS else OTHER_METHOD


def request_id(given: str | None) -> str:
    """The client's request id when it is short and plain, else a new random one (32 hex digits)."""
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return os.urandom(16).hex()


class InboundRecorder:
    """Records finished requests: the two series of a (method, route, status) are resolved once and cached,
    and the access log line goes through ``telemetry.logs.emit`` (the request's bound fields plus route,
    status and duration_ms)."""

    _CACHE_LIMIT = 4096

    def __init__(self, registry: Registry | None = None, *, logger: logging.Logger | None = None,
                 access_log: bool = True, name_spans: bool = True) -> None:
        registry = registry or default_registry()
        self._requests = registry.counter(INBOUND_REQUESTS)
        self._duration = registry.histogram(INBOUND_DURATION)
        self._series: dict[tuple[str, str, int], tuple[CounterChild, HistogramChild]] = {}
        self._logger = logger or logging.getLogger(ACCESS_LOGGER)
        self.access_log = access_log
        self.name_spans = name_spans

    def name_span(self, method: str, route: str) -> None:
        """Rename the current server span ``"METHOD /route/{template}"`` and set ``http.route``, when one is
        recording (the raw path would make one span name per URL)."""
        if self.name_spans:
            span = trace.get_current_span()
            if span.is_recording():
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)

    def record(self, method: str, route: str, status: int, elapsed: float, fields: dict[str, Any]) -> None:
        """Count one finished request and write its access line (ERROR for 5xx, INFO otherwise); ``fields``
        is the request's log context and must be the current one."""
        key = (method, route, status)
        pair = self._series.get(key)
        if pair is None:
            pair = (self._requests.labels(method, route, str(status)), self._duration.labels(method, route))
            if len(self._series) < self._CACHE_LIMIT:
                self._series[key] = pair
        pair[0].inc()
        pair[1].observe(elapsed)
        if self.access_log:
            fields["route"] = route
            fields["status"] = status
            fields["duration_ms"] = round(elapsed * 1000, 3)
            emit(self._logger, logging.ERROR if status >= 500 else logging.INFO, "request completed")
