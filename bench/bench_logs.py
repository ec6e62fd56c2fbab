"""Access log line benchmark: ns per line of the once-per-request access line, our JSON formatter against
python-json-logger and the standard library's text ``logging.Formatter``.

Every contender writes the line ``telemetry.instrumentation.asgi`` writes at the end of a request ("request
completed" with the request's six bound fields: request_id, method, user_id, route, status, duration_ms) to a
stream that discards it, through a logger of its own with one ``StreamHandler``:

- ours, ``logs.emit`` — what the middleware calls: with only JSON stream handlers listening, the line is
  written without a ``LogRecord``;
- ours, ``logger.info`` — the same line through a ``LogRecord`` and ``JsonFormatter.format`` (the path every
  other record takes, and ``emit`` when another handler listens too);
- the same, with logging's process-wide switches off (``logThreads``, ``logProcesses``,
  ``logMultiprocessing``), which ``configure()`` used to set for the whole process: reported, to show what the
  switches saved;
- python-json-logger (4.2, ``pythonjsonlogger.json.JsonFormatter``) with ``add_fields`` extended to write the
  same JSON object (time, level, logger, message, the request's fields, trace ids);
- the anchor: ``logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s")`` with the fields in a
  ``%``-message (``GET /route 200 12.345 ms``), the plain text line a service without this package writes.

The two JSON formatters' lines are checked to be the same object (time apart) before timing. Timings are this
thread's CPU time, garbage collector paused, the best of many short interleaved rounds (as in bench_core).
Prints a Markdown table and exits 1 if a target is missed:

1. ``logs.emit`` costs at most the anchor (a JSON access line is no dearer than logging's plain text one);
2. ours through ``logger.info`` costs at most python-json-logger's.

Run: ``.venv/bin/python bench/bench_logs.py`` (or ``make bench``). Exit 2 if the benchmark itself fails.
"""

from __future__ import annotations

import gc
import io
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter as PjlFormatter

from telemetry import logs

CALLS = 5_000
ROUNDS = 25
FIELDS: dict[str, Any] = {"request_id": "b6af09af345352e6ffc2c4a9f72a2540", "method": "POST", "user_id": 2,
                          "route": "/api/projects/{account}/{project}/runs", "status": 201, "duration_ms": 14.841}
MESSAGE = "request completed"
clock = time.thread_time


class Discard(io.TextIOBase):
    """A text stream that keeps nothing (the last line, for the output checks)."""

    last = ""

    def write(self, text: str) -> int:
        self.last = text
        return len(text)

    def flush(self) -> None:
        pass


class SameLineJsonFormatter(PjlFormatter):  # type: ignore[misc]
    """python-json-logger writing our line: what building on it would take."""

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["time"] = (datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
                            .replace("+00:00", "Z"))
        log_data["level"] = record.levelname.lower()
        log_data["logger"] = record.name
        log_data["message"] = record.message
        log_data.update(logs.bound_fields())
        super().add_fields(log_data, record, message_dict)  # extra= fields
        ids = logs.trace_ids()
        if ids:
            log_data["trace_id"], log_data["span_id"] = ids


def logger_with(name: str, formatter: logging.Formatter) -> tuple[logging.Logger, Discard]:
    stream = Discard()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"bench.logs.{name}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.handlers[:] = [handler]
    return logger, stream


@contextmanager
def switches_off() -> Iterator[None]:
    saved = logging.logThreads, logging.logProcesses, logging.logMultiprocessing
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    try:
        yield
    finally:
        logging.logThreads, logging.logProcesses, logging.logMultiprocessing = saved


def contenders() -> tuple[dict[str, Callable[[], None]], dict[str, Discard]]:
    ours, ours_out = logger_with("ours", logs.JsonFormatter())
    pjl, pjl_out = logger_with("pjl", SameLineJsonFormatter())
    text, text_out = logger_with("text", logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s"))
    info = logging.INFO
    method, route, status, ms = FIELDS["method"], FIELDS["route"], FIELDS["status"], FIELDS["duration_ms"]

    def emit() -> None:
        for _ in range(CALLS):
            logs.emit(ours, info, MESSAGE)

    def ours_info() -> None:
        for _ in range(CALLS):
            ours.info(MESSAGE)

    def ours_info_switches_off() -> None:
        with switches_off():
            ours_info()

    def pjl_info() -> None:
        for _ in range(CALLS):
            pjl.info(MESSAGE)

    def text_info() -> None:
        for _ in range(CALLS):
            text.info("%s %s %s %.3f ms", method, route, status, ms)

    runs = {"ours, logs.emit (the middleware's call)": emit,
            "ours, logger.info + JsonFormatter": ours_info,
            "ours, logger.info, logging's switches off (reported)": ours_info_switches_off,
            "python-json-logger 4.2, logger.info": pjl_info,
            "stdlib logging.Formatter text line (anchor)": text_info}
    outputs = {"ours": ours_out, "pjl": pjl_out, "text": text_out}
    return runs, outputs


def check_same_line(runs: dict[str, Callable[[], None]], outputs: dict[str, Discard]) -> None:
    """Both JSON formatters write the same object, and the emit path the same as logger.info."""
    lines = {}
    for name, run in runs.items():
        run()
        key = "ours" if name.startswith("ours") else "pjl" if "json-logger" in name else "text"
        line = json.loads(outputs[key].last) if key != "text" else {}
        line.pop("time", None)
        lines[name] = line
    json_lines = [v for k, v in lines.items() if "Formatter text" not in k]
    expected = {"level": "info", "logger": "", "message": MESSAGE, **FIELDS}
    for line in json_lines:
        line["logger"] = ""
        assert line == expected, f"{line} != {expected}"
    assert outputs["text"].last.endswith(f"POST {FIELDS['route']} 201 14.841 ms\n"), outputs["text"].last


def timed(fn: Callable[[], None]) -> float:
    gc.collect()
    gc.disable()
    try:
        start = clock()
        fn()
        return clock() - start
    finally:
        gc.enable()


def main() -> int:
    print("## bench_logs: one access log line (ns per line)\n")
    print(f"Python {sys.version.split()[0]}; {CALLS:,} lines per round, {ROUNDS} interleaved rounds, best kept; "
          f"the request's six fields bound, no active span.\n")
    with logs.request_scope(**FIELDS):
        runs, outputs = contenders()
        check_same_line(runs, outputs)
        ns = dict.fromkeys(runs, float("inf"))
        for _ in range(ROUNDS):
            for name, run in runs.items():
                ns[name] = min(ns[name], timed(run) / CALLS * 1e9)
    names = list(runs)
    emit, info, _, pjl, anchor = (ns[n] for n in names)
    targets = {names[0]: (emit <= anchor, "≤ anchor"), names[1]: (info <= pjl, "≤ python-json-logger")}
    print("| Access line | ns per line | vs anchor | Target |\n| --- | ---: | ---: | --- |")
    for name in names:
        met, what = targets.get(name, (True, ""))
        verdict = f"{what}: {'met' if met else 'MISSED'}" if what else ""
        print(f"| {name} | {ns[name]:,.0f} | {ns[name] / anchor:.2f}x | {verdict} |")
    ok = all(met for met, _ in targets.values())
    print(f"\nbench_logs: {'all targets met' if ok else 'TARGET MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # a benchmark that cannot run is not a missed target
        traceback.print_exc()
        sys.exit(2)
