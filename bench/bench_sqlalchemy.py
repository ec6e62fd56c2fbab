"""SQLAlchemy instrumentation cost: ``SELECT 1`` on a SQLite file, bare vs instrumented.

Two shapes, because they exercise different hooks:

- checkout + SELECT 1 + checkin (``with engine.connect() as c: c.execute(...)``), a web request's unit of
  work: pool events and the statement timer;
- SELECT 1 on a connection already held: the statement timer alone on the cheapest statement there is, the
  worst case for a per-statement cost (about 1 µs against about 30 µs: the timer appends the duration and the
  histogram buckets it at the next scrape, ``HistogramChild.observe_measured``).

The target (at most 1.10x bare) applies to both shapes.

Configurations, applied in turn to one engine over one SQLite file (QueuePool, SQLAlchemy's default for
files) — instrumented and uninstrumented between batches, outside the timed part, so that no difference
between two engines, files or connections can pass for instrumentation cost:

- bare: an uninstrumented engine;
- instrumented (default): ``instrument_sqlalchemy(engine)`` with no tracer provider configured — target: at
  most 1.10x bare (checkout shape);
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

from telemetry.catalogue import REPO_QUERY_DURATION
from telemetry.instrumentation.sqlalchemy import instrument_sqlalchemy, uninstrument_sqlalchemy
from telemetry.registry import Registry

TARGET = 1.10
BATCHES = 3000  # per configuration and shape
PER_BATCH = 10
WARMUP = 50
SELECT_1 = sa.text("SELECT 1")
CHECKOUT = "checkout + SELECT 1 + checkin"


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


def run(engine: sa.Engine, configure: dict[str, Callable[[], None]], batch: Callable[[], int],
        ) -> dict[str, list[float]]:
    """Per-statement microseconds of every batch, configurations taking turns on ``engine``."""
    times: dict[str, list[float]] = {name: [] for name in configure}
    order = list(configure.items())
    for _, apply in order:
        apply()
        for _ in range(WARMUP):
            batch()  # connections made, statements compiled and cached
        uninstrument_sqlalchemy(engine)
    gc.disable()
    try:
        for i in range(BATCHES):
            k = i % len(order)
            for name, apply in order[k:] + order[:k]:
                apply()
                times[name].append(batch() / PER_BATCH / 1e3)
                uninstrument_sqlalchemy(engine)
    finally:
        gc.enable()
    return times


def main() -> int:
    registry = Registry()
    tracer_provider = TracerProvider()
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        engine = sa.create_engine(f"sqlite:///{tmp}/bench.db")
        configure: dict[str, Callable[[], None]] = {
            "bare": lambda: None,
            "instrumented (default)": lambda: instrument_sqlalchemy(engine, pool_name="default",
                                                                    registry=registry),
            "instrumented + upstream spans": lambda: instrument_sqlalchemy(
                engine, pool_name="spans", registry=registry, spans=True, tracer_provider=tracer_provider),
        }
        results = {CHECKOUT: run(engine, configure, checkout_and_select(engine))}
        with engine.connect() as conn:
            results["SELECT 1 on a held connection"] = run(engine, configure, select_on_held(conn))
        counted = {pool: sum(c.snapshot()[2] for c in registry.histogram(REPO_QUERY_DURATION).series()
                             if c.labels[0] == pool) for pool in ("default", "spans")}
        engine.dispose()

    expected = 2 * (WARMUP + BATCHES) * PER_BATCH
    for shape, times in results.items():
        bare = statistics.median(times["bare"])
        print(f"## SQLAlchemy on a SQLite file: {shape} ({BATCHES} batches of {PER_BATCH} per configuration, "
              "taking turns)\n")
        print("| Configuration | median µs per statement | ratio | Target |")
        print("| --- | ---: | ---: | ---: |")
        for name, values in times.items():
            median = statistics.median(values)
            gated = name == "instrumented (default)"
            target = f"≤ {TARGET:.2f}x" if gated else ""
            if target and median / bare > TARGET:
                failed = True
            print(f"| {name} | {median:.2f} | {median / bare:.3f}x | {target} |")
        print()
    print(f"Load average during the run: {os.getloadavg()[0]:.2f} (machine with {os.cpu_count()} CPUs).")
    print(f"Statements recorded in {REPO_QUERY_DURATION}: {counted} (expected {expected} each).")
    if any(v != expected for v in counted.values()):
        print("FAIL: the instrumented engine did not record every statement")
        failed = True
    if failed:
        print(f"\nFAIL: a target was missed (instrumented at most {TARGET}x bare)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
