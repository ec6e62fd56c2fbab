"""SQLAlchemy instrumentation cost: ``SELECT 1`` on a SQLite file, bare vs instrumented.

Two shapes, because they exercise different hooks:

- checkout + SELECT 1 + checkin (``with engine.connect() as c: c.execute(...)``), a web request's shape:
  pool events and the statement timer;
- SELECT 1 on a connection already held: the statement timer alone, on the cheapest statement there is.

Configurations, each on its own engine over its own SQLite file (QueuePool, SQLAlchemy's default for files):

- bare: an uninstrumented engine;
- instrumented (default): ``instrument_sqlalchemy(engine)`` with no tracer provider configured — target: at
  most 1.10x bare in both shapes;
- instrumented + upstream spans: ``spans=True`` with an SDK tracer provider (no exporter), i.e.
  opentelemetry-instrumentation-sqlalchemy's ``EngineTracer`` on top — reported, no target.

The configurations take turns in small batches (the order rotates each time), each batch is timed, and the
ratio compares medians, which cancels the slow drifts of a shared machine. Run:
``.venv/bin/python bench/bench_sqlalchemy.py``. Exit code 1 when a target is missed.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from opentelemetry.sdk.trace import TracerProvider

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from telemetry.instrumentation.sqlalchemy import instrument_sqlalchemy, uninstrument_sqlalchemy
from telemetry.registry import Registry

TARGET = 1.10
BATCHES = 3000  # per configuration and shape
PER_BATCH = 10
SELECT_1 = sa.text("SELECT 1")


def checkout_and_select(engine: sa.Engine) -> Callable[[], int]:
    def batch() -> int:
        start = time.perf_counter_ns()
        for _ in range(PER_BATCH):
            with engine.connect() as conn:
                conn.execute(SELECT_1).scalar()
        return time.perf_counter_ns() - start
    return batch


def select_on_held(conn: sa.Connection) -> Callable[[], int]:
    def batch() -> int:
        start = time.perf_counter_ns()
        for _ in range(PER_BATCH):
            conn.execute(SELECT_1).scalar()
        return time.perf_counter_ns() - start
    return batch


def run(batches: dict[str, Callable[[], int]]) -> dict[str, list[float]]:
    """Per-statement microseconds of every batch, configurations taking turns."""
    times: dict[str, list[float]] = {name: [] for name in batches}
    order = list(batches.items())
    for _, fn in order:
        for _ in range(50):
            fn()  # warm up: connections made, statements compiled and cached
    gc.disable()
    try:
        for i in range(BATCHES):
            k = i % len(order)
            for name, fn in order[k:] + order[:k]:
                times[name].append(fn() / PER_BATCH / 1e3)
    finally:
        gc.enable()
    return times


def main() -> int:
    registry = Registry()
    tracer_provider = TracerProvider()
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        engines = {name: sa.create_engine(f"sqlite:///{tmp}/{i}.db")
                   for i, name in enumerate(("bare", "instrumented (default)", "instrumented + upstream spans"))}
        instrument_sqlalchemy(engines["instrumented (default)"], pool_name="default", registry=registry)
        instrument_sqlalchemy(engines["instrumented + upstream spans"], pool_name="spans", registry=registry,
                              spans=True, tracer_provider=tracer_provider)
        results = {"checkout + SELECT 1 + checkin": run({n: checkout_and_select(e) for n, e in engines.items()})}
        held = {name: engine.connect() for name, engine in engines.items()}
        results["SELECT 1 on a held connection"] = run({n: select_on_held(c) for n, c in held.items()})
        for conn in held.values():
            conn.close()
        counted = {pool: sum(c.count for c in registry.histogram("tuist_repo_query_duration_milliseconds").series()
                             if c.labels[0] == pool) for pool in ("default", "spans")}
        uninstrument_sqlalchemy()
        for engine in engines.values():
            engine.dispose()

    expected = 2 * (50 + BATCHES) * PER_BATCH
    for shape, times in results.items():
        bare = statistics.median(times["bare"])
        print(f"## SQLAlchemy on a SQLite file: {shape} ({BATCHES} batches of {PER_BATCH} per configuration, "
              "taking turns)\n")
        print("| Configuration | median µs per statement | ratio | Target |")
        print("| --- | ---: | ---: | ---: |")
        for name, values in times.items():
            median = statistics.median(values)
            target = f"≤ {TARGET:.2f}x" if name == "instrumented (default)" else ""
            if target and median / bare > TARGET:
                failed = True
            print(f"| {name} | {median:.2f} | {median / bare:.3f}x | {target} |")
        print()
    print(f"Load average during the run: {os.getloadavg()[0]:.2f} (machine with {os.cpu_count()} CPUs).")
    print(f"Statements recorded in tuist_repo_query_duration_milliseconds: {counted} (expected {expected} each).")
    if any(v != expected for v in counted.values()):
        print("FAIL: the instrumented engines did not record every statement")
        failed = True
    if failed:
        print(f"\nFAIL: a target was missed (instrumented at most {TARGET}x bare)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
