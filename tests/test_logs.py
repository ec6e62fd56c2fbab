"""``telemetry.logs``: one JSON object per line with the request's fields and the active span's ids."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import os
import threading
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from telemetry import logs


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger(f"test.logs.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_basic_fields_and_extra(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    logger.warning("disk %s at %d%%", "/var", 91, extra={"volume": "var", "free_bytes": 1024})
    [line] = lines(stream)
    assert line["level"] == "warning" and line["message"] == "disk /var at 91%"
    assert line["logger"] == logger.name and line["volume"] == "var" and line["free_bytes"] == 1024
    assert str(line["time"]).endswith("Z") and len(str(line["time"])) == len("2026-01-01T00:00:00.000Z")
    assert "trace_id" not in line and "request_id" not in line


def test_one_line_per_record_even_with_newlines_and_objects(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    logger.info("two\nlines \"quoted\" é", extra={"obj": object()})
    assert stream.getvalue().count("\n") == 1
    [line] = lines(stream)
    assert line["message"] == "two\nlines \"quoted\" é" and str(line["obj"]).startswith("<object object")


def test_exception(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    try:
        raise KeyError("missing")
    except KeyError:
        logger.exception("lookup failed")
    [line] = lines(stream)
    assert line["level"] == "error" and "KeyError: 'missing'" in str(line["exception"])


def test_request_fields_and_bind_from_a_worker_thread(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    with logs.request_scope(request_id="r-1", method="GET") as fields:
        context = contextvars.copy_context()  # what Starlette's thread pool does
        worker = threading.Thread(target=context.run, args=(logs.bind,), kwargs={"user_id": 7})
        worker.start()
        worker.join()
        assert fields == {"request_id": "r-1", "method": "GET", "user_id": 7}
        logger.info("inside")
        assert logs.bound_fields() == fields
    logger.info("outside")
    logs.bind(user_id=9)  # outside a request: ignored
    inside, outside = lines(stream)
    assert inside["request_id"] == "r-1" and inside["user_id"] == 7 and inside["method"] == "GET"
    assert "request_id" not in outside and "user_id" not in outside
    assert logs.bound_fields() == {}


def test_trace_and_span_ids_of_the_active_span(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("outer") as span:
        logger.info("in span")
        ctx = span.get_span_context()
    [line] = lines(stream)
    assert line["trace_id"] == format(ctx.trace_id, "032x")
    assert line["span_id"] == format(ctx.span_id, "016x")
    assert logs.trace_ids() is None


def test_configure_is_idempotent() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    first, second = io.StringIO(), io.StringIO()
    try:
        logs.configure("INFO", first)
        handler = logs.configure(logging.DEBUG, second)
        assert [h for h in root.handlers if h not in before] == [handler]
        logging.getLogger("test.configure").debug("hello")
        assert first.getvalue() == ""
        assert json.loads(second.getvalue())["message"] == "hello"
    finally:
        for h in list(root.handlers):
            if h not in before:
                root.removeHandler(h)
        root.setLevel(level)


def test_emit_writes_what_logger_log_would(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture  # a plain JSON StreamHandler: the fast path
    with logs.request_scope(request_id="r-2", route="/x", status=201):
        logs.emit(logger, logging.INFO, "request completed")
        logger.info("request completed")
        logs.emit(logger, logging.DEBUG - 1, "below the logger's level")
    fast, slow = lines(stream)
    assert fast.pop("time") and slow.pop("time")
    assert fast == slow == {"level": "info", "logger": logger.name, "message": "request completed",
                            "request_id": "r-2", "route": "/x", "status": 201}


def test_emit_takes_the_ordinary_path_when_a_filter_is_in_the_way(
        capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    seen: list[logging.LogRecord] = []

    def keep(record: logging.LogRecord) -> bool:
        seen.append(record)
        return record.levelno >= logging.WARNING
    logger.addFilter(keep)
    try:
        logs.emit(logger, logging.INFO, "dropped by the filter")
        logs.emit(logger, logging.ERROR, "kept")
    finally:
        logger.removeFilter(keep)
    assert [r.getMessage() for r in seen] == ["dropped by the filter", "kept"]
    assert [line["message"] for line in lines(stream)] == ["kept"]


def test_configure_leaves_other_handlers_and_loggers_alone() -> None:
    """A handler of the application's own that shows the process and thread ids keeps working beside
    ``configure()``'s, on records from ``logger.info`` and from ``emit`` alike; logging's process-wide switches,
    the record factory and other loggers are untouched (only the root level is set, as documented)."""
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    switches = (logging.logThreads, logging.logProcesses, logging.logMultiprocessing)
    factory = logging.getLogRecordFactory()
    own_stream, json_stream = io.StringIO(), io.StringIO()
    own = logging.StreamHandler(own_stream)
    own.setFormatter(logging.Formatter("%(process)d %(thread)d %(threadName)s %(processName)s %(message)s"))
    other = logging.getLogger("test.logs.other")
    other_state = (other.level, list(other.handlers), other.propagate)
    errors: list[logging.LogRecord] = []
    own.handleError = errors.append  # type: ignore[method-assign]  # a format error must fail the test
    root.addHandler(own)
    try:
        logs.configure(logging.INFO, json_stream)
        logging.getLogger("test.logs.app").info("from the app")
        logs.emit(logging.getLogger("telemetry.access"), logging.INFO, "request completed")
        assert errors == []
        prefix = f"{os.getpid()} {threading.get_ident()} {threading.current_thread().name} MainProcess"
        assert own_stream.getvalue().splitlines() == [f"{prefix} from the app", f"{prefix} request completed"]
        assert [line["message"] for line in lines(json_stream)] == ["from the app", "request completed"]
        assert (logging.logThreads, logging.logProcesses, logging.logMultiprocessing) == switches
        assert logging.getLogRecordFactory() is factory
        assert (other.level, list(other.handlers), other.propagate) == other_state
        assert root.level == logging.INFO
    finally:
        for h in list(root.handlers):
            if h not in before:
                root.removeHandler(h)
        root.setLevel(level)
