"""Structured logs: one JSON object per line, carrying the request's context and the current trace ids.

``JsonFormatter`` writes ``time``, ``level``, ``logger``, ``message``, then the fields bound to the current
request (``request_id``, ``user_id``, ``method``, ``route``, ...), any ``extra={...}`` fields of the call, and
``trace_id``/``span_id`` of the active OpenTelemetry span. ``request_scope()`` opens a request's context and
``bind()`` adds to it from anywhere inside the request, including worker threads (see ``bind``).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from opentelemetry import trace

# The request's fields live in one mutable dict per request. A worker thread (Starlette runs sync endpoints
# in a thread pool) gets a *copy* of the context, but the copy points at the same dict, so a ``bind()`` there
# is seen by the middleware that writes the access log line.
_REQUEST: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("telemetry_log_fields",
                                                                                 default=None)

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged as a field.
# ``color_message`` is uvicorn's ANSI-coloured copy of the message, noise in a JSON line.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName", "color_message"}


@contextmanager
def request_scope(**fields: Any) -> Iterator[dict[str, Any]]:
    """Open a request's log context; yields the dict ``bind()`` fills."""
    bound: dict[str, Any] = dict(fields)
    token = _REQUEST.set(bound)
    try:
        yield bound
    finally:
        _REQUEST.reset(token)


def bind(**fields: Any) -> None:
    """Add fields (``user_id=...``) to the current request's log lines; a no-op outside a request."""
    bound = _REQUEST.get()
    if bound is not None:
        bound.update(fields)


def bound_fields() -> dict[str, Any]:
    """A copy of the current request's fields (empty outside a request)."""
    bound = _REQUEST.get()
    return dict(bound) if bound else {}


def trace_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the active span in the W3C hex form, or None when there is none."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = record.created
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        bound = _REQUEST.get()
        if bound:
            out.update(bound)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        ids = trace_ids()
        if ids is not None:
            out["trace_id"], out["span_id"] = ids
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, default=str, separators=(",", ":"), ensure_ascii=False)


_installed: logging.Handler | None = None


def configure(level: int | str = logging.INFO, stream: IO[str] | None = None) -> logging.Handler:
    """Send the root logger's records to ``stream`` (stderr by default) as JSON lines.

    Idempotent: a second call replaces the handler the first one installed and leaves other handlers alone.
    """
    global _installed
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    _installed = handler
    return handler
