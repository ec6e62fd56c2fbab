"""Structured logs: one JSON object per line, carrying the request's context and the current trace ids.

``JsonFormatter`` writes ``time``, ``level``, ``logger``, ``message``, then the fields bound to the current
request (``request_id``, ``user_id``, ``method``, ``route``, ...), any ``extra={...}`` fields of the call, and
``trace_id``/``span_id`` of the active OpenTelemetry span. ``request_scope()`` opens a request's context and
``bind()`` adds to it from anywhere inside the request, including worker threads (see ``bind``).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from opentelemetry import trace

from telemetry.context import current_request, enter_request, exit_request

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged as a field.
# ``color_message`` is uvicorn's ANSI-coloured copy of the message, noise in a JSON line.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName", "color_message"}


@contextmanager
def request_scope(**fields: Any) -> Iterator[dict[str, Any]]:
    """Open a request's log context; yields the dict ``bind()`` fills."""
    bound: dict[str, Any] = dict(fields)
    token = enter_request(bound)  # the request context of telemetry.context, shared with analytics
    try:
        yield bound
    finally:
        exit_request(token)


def bind(**fields: Any) -> None:
    """Add fields (``user_id=...``) to the current request's log lines; a no-op outside a request."""
    request = current_request()
    if request is not None:
        request.fields.update(fields)


def bound_fields() -> dict[str, Any]:
    """A copy of the current request's fields (empty outside a request)."""
    request = current_request()
    return dict(request.fields) if request is not None else {}


def trace_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the active span in the W3C hex form, or None when there is none."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"), ensure_ascii=False)
_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error",
                logging.CRITICAL: "critical"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line.

    It runs once per request (the access log line), so the hot parts are kept cheap: the timestamp's seconds
    are formatted once per second, ``extra`` fields are found with one set difference, and one encoder is
    reused.
    """

    _second = -1
    _second_text = ""

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"

    def line(self, created: float, level: int, logger: str, message: str,
             extra: dict[str, Any] | None = None, exception: str | None = None) -> str:
        """The JSON line for one event; ``format()`` and ``emit()`` both come here."""
        out: dict[str, Any] = {"time": self._time(created),
                               "level": _LEVEL_NAMES.get(level) or logging.getLevelName(level).lower(),
                               "logger": logger, "message": message}
        request = current_request()
        if request is not None and request.fields:
            out.update(request.fields)
        if extra:
            out.update(extra)
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            out["trace_id"] = format(ctx.trace_id, "032x")
            out["span_id"] = format(ctx.span_id, "016x")
        if exception:
            out["exception"] = exception
        return _ENCODER.encode(out)

    def format(self, record: logging.LogRecord) -> str:
        fields = vars(record)
        keys = fields.keys() - _STANDARD
        extra = {k: fields[k] for k in keys if not k.startswith("_")} if keys else None
        exception = None
        if record.exc_info:
            exception = self.formatException(record.exc_info)
        elif record.exc_text:
            exception = record.exc_text
        return self.line(record.created, record.levelno, record.name, record.getMessage(), extra, exception)


def _plain_json_handlers(logger: logging.Logger, level: int) -> list[logging.StreamHandler[Any]] | None:
    """The handlers a record from ``logger`` at ``level`` would reach, when every one of them is a plain
    ``StreamHandler`` with a ``JsonFormatter`` and nothing on the way filters; None otherwise."""
    found: list[logging.StreamHandler[Any]] = []
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters or current.disabled:
            return None
        for handler in current.handlers:
            if level < handler.level:
                continue
            if (type(handler) is not logging.StreamHandler or handler.filters
                    or not isinstance(handler.formatter, JsonFormatter)):
                return None
            found.append(handler)
        if not current.propagate:
            break
        current = current.parent
    return found


def emit(logger: logging.Logger, level: int, message: str) -> None:
    """``logger.log(level, message)`` for once-per-request lines, with the same output.

    When every handler the line would reach is a plain JSON stream handler (what ``configure()`` installs),
    the line is written to their streams directly: no ``LogRecord``, no caller, thread or process lookups, no
    handler chain — about half the cost of ``logger.info`` (``bench/bench_logs.py``). Anything else (filters,
    other handlers or formatters) takes the ordinary path, with a complete ``LogRecord``.
    """
    if not logger.isEnabledFor(level):
        return
    handlers = _plain_json_handlers(logger, level)
    if handlers is None:
        logger.handle(logger.makeRecord(logger.name, level, __file__, 0, message, (), None))
        return
    created = time.time()
    for handler in handlers:
        line = handler.formatter.line(created, level, logger.name, message)  # type: ignore[union-attr]
        handler.acquire()
        try:
            handler.stream.write(line + handler.terminator)
            handler.stream.flush()
        except Exception:
            handler.handleError(logging.makeLogRecord({"msg": message, "levelno": level, "name": logger.name}))
        finally:
            handler.release()


_installed: logging.Handler | None = None


def configure(level: int | str = logging.INFO, stream: IO[str] | None = None) -> logging.Handler:
    """Send the root logger's records to ``stream`` (stderr by default) as JSON lines.

    It adds one handler to the root logger and sets the root logger's level to ``level``; nothing else in
    ``logging`` changes. Other handlers keep their records whole (a formatter showing ``%(process)d`` or
    ``%(thread)d`` keeps working), other loggers keep their levels, handlers and ``propagate``, and the record
    factory and logging's process-wide switches are left alone.
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
