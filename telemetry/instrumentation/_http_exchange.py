"""One outbound request's timeline, built from httpcore's trace events, and the error kinds.

httpcore calls the request's ``trace`` extension with ``<prefix>.<step>.started`` and then
``.complete`` or ``.failed`` for each network step. ``Exchange`` keeps only timestamps and sums on that path
(the events fire about ten times per request); everything is recorded once, when the response is closed or
the request fails (``Recorder.finish``), so the hot path stays a few dictionary lookups and additions.

Phases (all durations in nanoseconds from ``time.perf_counter_ns``):

- queue: the request's start (entering the transport) to its first network event; there is no pool-acquire
  event, and the first network event is the moment a pool connection started working for this request;
- connection: ``connect_tcp``/``connect_unix_socket``, ``start_tls``, connect ``retry`` back-offs and HTTP/2's
  ``send_connection_init``; counted once per connection established by this request;
- send: ``send_request_headers`` plus ``send_request_body``; receive: ``receive_response_headers`` plus
  ``receive_response_body`` (a streamed body's time includes the caller's pauses between reads).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

_clock = time.perf_counter_ns

_log = logging.getLogger("telemetry.instrumentation.httpx")

CONNECT, SEND, RECEIVE = 0, 1, 2
STARTED, COMPLETE, FAILED = 0, 1, 2

_STEPS = {
    "connection.connect_tcp": CONNECT,
    "connection.connect_unix_socket": CONNECT,
    "connection.start_tls": CONNECT,
    "connection.retry": CONNECT,
    "http2.send_connection_init": CONNECT,
    "http11.send_request_headers": SEND,
    "http11.send_request_body": SEND,
    "http2.send_request_headers": SEND,
    "http2.send_request_body": SEND,
    "http11.receive_response_headers": RECEIVE,
    "http11.receive_response_body": RECEIVE,
    "http2.receive_response_headers": RECEIVE,
    "http2.receive_response_body": RECEIVE,
}
_HEADERS_RECEIVED = {"http11.receive_response_headers.complete", "http2.receive_response_headers.complete"}
_EDGES = {"started": STARTED, "complete": COMPLETE, "failed": FAILED}
# event name -> (phase, edge); computed once so the callback does one lookup per event.
EVENTS: dict[str, tuple[int, int]] = {f"{step}.{edge}": (phase, code)
                                      for step, phase in _STEPS.items() for edge, code in _EDGES.items()}

# What the status label says when no response arrived or the exchange failed part-way. The first matching
# httpx exception class wins (ConnectTimeout is not a ConnectError, so the order is only for readability).
ERROR_KINDS: tuple[tuple[str, str], ...] = (
    ("ConnectTimeout", "connect_timeout"),
    ("ReadTimeout", "read_timeout"),
    ("WriteTimeout", "write_timeout"),
    ("PoolTimeout", "pool_timeout"),
    ("ConnectError", "connect_error"),
    ("ReadError", "read_error"),
    ("WriteError", "write_error"),
    ("RemoteProtocolError", "remote_protocol_error"),
    ("LocalProtocolError", "local_protocol_error"),
    ("ProxyError", "proxy_error"),
    ("UnsupportedProtocol", "unsupported_protocol"),
)
CANCELLED = "cancelled"
OTHER = "other"
ERROR_KIND_VALUES: tuple[str, ...] = (*(kind for _, kind in ERROR_KINDS), CANCELLED, OTHER)


def error_kind(exc: BaseException) -> str:
    """The status label for a request that ended with ``exc`` (httpx and httpcore exceptions share names)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    for name, kind in ERROR_KINDS:
        if name in names:
            return kind
    if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit)):
        return CANCELLED
    return OTHER


_failures_logged = 0


def log_failure(what: str) -> None:
    """Log a failure inside the instrumentation (first few at WARNING, then DEBUG); never raises."""
    global _failures_logged
    _failures_logged += 1
    _log.log(logging.WARNING if _failures_logged <= 3 else logging.DEBUG, "%s failed; the request is unaffected",
             what, exc_info=True)


class Exchange:
    """The timeline of one request through an instrumented transport."""

    __slots__ = ("connect_ns", "connected", "error", "finished", "first", "headers_received",
                 "host", "mark", "method", "receive_ns", "send_ns", "sent", "start",
                 "status", "stream", "user_trace")

    def __init__(self, method: str, host: str, user_trace: Any) -> None:
        self.start = _clock()
        self.method = method
        self.host = host
        self.user_trace = user_trace
        self.first = 0
        self.mark = 0
        self.connect_ns = self.send_ns = self.receive_ns = 0
        self.connected = self.sent = False
        self.headers_received = False
        self.status = ""
        self.error = ""
        self.stream: Any = None
        self.finished = False

    def observe(self, name: str, info: Any = None) -> None:
        """Note one trace event; also the sync trace callback itself when the caller set none. Must never
        raise into the request (this runs about ten times per request, hence the flat code)."""
        try:
            code = EVENTS.get(name)
            if code is None:
                return
            now = _clock()
            phase, edge = code
            if edge == STARTED:
                if not self.first:
                    self.first = now
                self.mark = now
            elif phase == RECEIVE:
                self.receive_ns += now - self.mark
                if name in _HEADERS_RECEIVED:
                    self.headers_received = True
            elif phase == SEND:
                self.send_ns += now - self.mark
                self.sent = edge == COMPLETE
            else:
                # the last connect step decides: a retry that ends in a connection counts, a TLS failure
                # after a TCP connect does not
                self.connect_ns += now - self.mark
                self.connected = edge == COMPLETE
        except Exception:
            log_failure("the httpx trace callback")

    def trace(self, name: str, info: Any) -> None:
        """httpcore's trace callback for sync clients; a callback the caller set still runs after it."""
        self.observe(name)
        if self.user_trace is not None:
            self.user_trace(name, info)

    async def atrace(self, name: str, info: Any) -> None:
        """httpcore's trace callback for async clients (they need a coroutine function)."""
        self.observe(name)
        if self.user_trace is not None:
            await self.user_trace(name, info)
