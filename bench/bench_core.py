"""Core benchmarks: recording cost, overflow cost, a full /metrics scrape at 10,000 series, memory per series,
and the check that the recording path keeps OpenTelemetry's numbers.

Every figure is compared with anchors measured in the same run: prometheus_client (0.26), the plain
OpenTelemetry SDK (1.45.1: a ``MeterProvider`` with one ``InMemoryMetricReader``) and, for scrapes, the stock
``opentelemetry.exporter.prometheus.PrometheusMetricReader``. Ours is always the package as ``telemetry.setup``
builds it (``serve=False``, ``set_global=False``: the ``CatalogueMeterProvider`` with our Prometheus reader and
the runtime metrics). Prints Markdown tables and exits 1 if a target is missed:

1. labelled record ``family.labels(a,b,c).inc()`` / ``.observe(v)`` (label set resolved on every call) costs
   <= 1.0x prometheus_client's ``labels(a,b,c).inc()`` / ``.observe(v)``, and is >= 5x faster than the SDK's
   ``Counter.add(1, attrs)`` / ``Histogram.record(v, attrs)``;
2. bound record (a handle the caller holds) costs <= 1.0x prometheus_client's bound child;
3. ``recorders.runs.record(...)`` (counter + histogram) costs <= 1.0x prometheus_client's two calls;
4. the same label set past a family's limit, repeated, costs <= 1.5x a cached label set, for
   ``labels(...).inc()`` and ``runs.record``; a stream of distinct new label sets past the limit is reported;
5. a full scrape (``Telemetry.scrape()``: SDK collection included) of 10,000 counter series and of 10,000
   histogram series is >= 2x faster than ``generate_latest`` and than the stock reader; the same scrape with
   an extra ``InMemoryMetricReader`` on the provider is reported;
6. memory per series (tracemalloc) is <= prometheus_client's, counter and histogram; with an extra
   ``InMemoryMetricReader`` it is reported;
7. the same calls through our handles, collected by an ``InMemoryMetricReader`` on the catalogue's provider,
   equal the plain SDK's points, and every /metrics line of the two families shows exactly those numbers.

Run: ``.venv/bin/python bench/bench_core.py`` (or ``make bench``). Timings are this thread's CPU time
(``time.thread_time``: every contender runs on it, and time the core spends on other processes is left out),
the best of many short rounds with the garbage collector paused, ours and the anchors interleaved in every
round, so a noisy neighbour on a shared machine hurts every contender alike. Exit 2 if the benchmark itself
fails.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import sys
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, MetricsData
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client import Counter as PcCounter
from prometheus_client import Histogram as PcHistogram

import telemetry
from telemetry.catalogue import (
    HTTP_REQUEST_COUNT,
    HTTP_REQUEST_DURATION,
    OVERFLOW_METRIC,
    RUNS_DURATION,
    RUNS_TOTAL,
    SCOPE_NAME,
    spec,
)
from telemetry.exposition.render import format_float, label_inner
from telemetry.registry import Registry

RUNS = spec(RUNS_TOTAL)
RUN_MS = spec(RUNS_DURATION)
REQUESTS = spec(HTTP_REQUEST_COUNT)
REQUEST_NS = spec(HTTP_REQUEST_DURATION)

SERIES = 10_000
# Many short interleaved samples, best kept: on a shared 2-core machine a sample of ~10-30 ms often runs
# undisturbed, where a long one rarely does.
RECORD_CALLS = 20_000
OTEL_RECORD_CALLS = 3_000  # the SDK path is ~10x slower; fewer calls keep the samples as short
ROUNDS = 15
OVERFLOW_LIMIT = 4  # label sets per family before new ones overflow, in the overflow benchmark
SCRAPE_ROUNDS = 3  # prometheus_client and the stock reader take seconds per histogram scrape
OURS_SCRAPES_PER_ROUND = 3  # ours is fast: several scrapes per round, best kept

# 24 label sets, cycled, so every contender resolves a label set on every call as a service would.
COMMANDS = ("build", "test", "generate", "cache", "share", "run")
LABELS = [(c, ci, st) for c in COMMANDS for ci in ("true", "false") for st in ("0", "1")]
ARGS = [(c, ci == "true", int(st)) for c, ci, st in LABELS]
ATTRS = [dict(zip(RUNS.labels, values, strict=True)) for values in LABELS]
DURATIONS = [float(v) for v in (80, 420, 999, 2_600, 7_000, 45_000, 200_000, 4_000_000)]


@contextlib.contextmanager
def ours(registry: Registry, **overrides: Any) -> Iterator[telemetry.Telemetry]:
    """The package as ``setup()`` builds it, on ``registry``, shut down afterwards."""
    t = telemetry.setup(registry=registry, serve=False, set_global=False, metrics_port=0, **overrides)
    assert t.registry is registry and t.meter_provider is not None, "another telemetry.setup() is running"
    try:
        yield t
    finally:
        telemetry.shutdown()


def plain_sdk(instruments: Sequence[Any]) -> tuple[MeterProvider, InMemoryMetricReader]:
    """The plain OpenTelemetry SDK: one InMemoryMetricReader, the catalogue's buckets through Views."""
    reader = InMemoryMetricReader()
    views = [View(instrument_name=s.name, aggregation=ExplicitBucketHistogramAggregation(s.buckets))
             for s in instruments if s.buckets]
    return MeterProvider(metric_readers=[reader], views=views, shutdown_on_exit=False), reader


# Every contender runs on this one thread: its CPU time leaves out the time other processes on a busy
# machine take the core away (which wall time would charge to whoever was running).
clock = time.thread_time


def timed(fn: Callable[[], object]) -> float:
    """CPU seconds of one ``fn()`` on this thread, garbage collector paused."""
    gc.collect()
    gc.disable()
    try:
        start = clock()
        fn()
        return clock() - start
    finally:
        gc.enable()


def interleaved(contenders: dict[str, tuple[Callable[[], object], int]], rounds: int = ROUNDS) -> dict[str, float]:
    """Best ns per call of each contender ``(fn, calls per fn())`` over ``rounds`` interleaved rounds."""
    ns = dict.fromkeys(contenders, float("inf"))
    for _ in range(rounds):
        for name, (fn, calls) in contenders.items():
            ns[name] = min(ns[name], timed(fn) / calls * 1e9)
    return ns


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def cycled(items: Sequence[Any], n: int = RECORD_CALLS) -> list[Any]:
    return list(itertools.islice(itertools.cycle(items), n))


# --- 1-3: recording ----------------------------------------------------------------------------------------

def bench_recording() -> tuple[list[str], bool]:
    labels, args, durations = cycled(LABELS), cycled(ARGS), cycled(DURATIONS)
    pairs = list(zip(labels, durations, strict=True))
    otel_attrs = cycled(ATTRS, OTEL_RECORD_CALLS)
    otel_pairs = list(zip(otel_attrs, durations, strict=False))

    pc = CollectorRegistry()
    pc_counter = PcCounter("tuist_runs", RUNS.help, RUNS.labels, registry=pc)
    pc_hist = PcHistogram(RUN_MS.name, RUN_MS.help, RUN_MS.labels, buckets=RUN_MS.buckets, registry=pc)
    provider, _ = plain_sdk([RUNS, RUN_MS])
    meter = provider.get_meter(SCOPE_NAME)
    otel_counter = meter.create_counter(RUNS.name, unit=RUNS.unit, description=RUNS.help)
    otel_hist = meter.create_histogram(RUN_MS.name, unit=RUN_MS.unit, description=RUN_MS.help)

    with ours(Registry()) as t:
        counter, hist, record = t.registry.counter(RUNS_TOTAL), t.registry.histogram(RUNS_DURATION), \
            t.recorders.runs.record
        bound_counters = cycled([counter.labels(*v) for v in LABELS])
        bound_hists = list(zip(cycled([hist.labels(*v) for v in LABELS]), durations, strict=True))
        pc_bound_counters = cycled([pc_counter.labels(*v) for v in LABELS])
        pc_bound_hists = list(zip(cycled([pc_hist.labels(*v) for v in LABELS]), durations, strict=True))

        def ours_inc() -> None:
            for values in labels:
                counter.labels(*values).inc()

        def pc_inc() -> None:
            for values in labels:
                pc_counter.labels(*values).inc()

        def otel_add() -> None:
            for a in otel_attrs:
                otel_counter.add(1, a)

        def ours_observe() -> None:
            for values, v in pairs:
                hist.labels(*values).observe(v)

        def pc_observe() -> None:
            for values, v in pairs:
                pc_hist.labels(*values).observe(v)

        def otel_record() -> None:
            for a, v in otel_pairs:
                otel_hist.record(v, a)

        def ours_bound_inc() -> None:
            for child in bound_counters:
                child.inc()

        def pc_bound_inc() -> None:
            for child in pc_bound_counters:
                child.inc()

        def ours_bound_observe() -> None:
            for child, v in bound_hists:
                child.observe(v)

        def pc_bound_observe() -> None:
            for child, v in pc_bound_hists:
                child.observe(v)

        def ours_runs_record() -> None:
            for (name, is_ci, status), v in zip(args, durations, strict=True):
                record(name, is_ci=is_ci, status=status, duration_ms=v)

        def pc_both() -> None:
            for values, v in pairs:
                pc_counter.labels(*values).inc()
                pc_hist.labels(*values).observe(v)

        n, o = RECORD_CALLS, OTEL_RECORD_CALLS
        ns = interleaved({
            "ours_inc": (ours_inc, n), "pc_inc": (pc_inc, n), "otel_add": (otel_add, o),
            "ours_observe": (ours_observe, n), "pc_observe": (pc_observe, n), "otel_record": (otel_record, o),
            "ours_bound_inc": (ours_bound_inc, n), "pc_bound_inc": (pc_bound_inc, n),
            "ours_bound_observe": (ours_bound_observe, n), "pc_bound_observe": (pc_bound_observe, n),
            "ours_runs_record": (ours_runs_record, n), "pc_both": (pc_both, n),
        })
    provider.shutdown()

    ok = True
    lines = ["### Recording, three labels (CPU ns per call)", "",
             "| Operation | ours | prometheus_client | OTel SDK | ours / prometheus_client | OTel SDK / ours | "
             "target |", "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    rows = [
        ("labelled counter `labels(a,b,c).inc()` (SDK: `add(1, attrs)`)", "ours_inc", "pc_inc", "otel_add"),
        ("labelled histogram `labels(a,b,c).observe(v)` (SDK: `record(v, attrs)`)", "ours_observe", "pc_observe",
         "otel_record"),
        ("bound counter `child.inc()`", "ours_bound_inc", "pc_bound_inc", None),
        ("bound histogram `child.observe(v)`", "ours_bound_observe", "pc_bound_observe", None),
        ("`recorders.runs.record(...)` (counter + histogram)", "ours_runs_record", "pc_both", None),
    ]
    for label, mine, pc_name, otel_name in rows:
        ratio = ns[mine] / ns[pc_name]
        met = ratio <= 1.0
        target = f"<= 1.0x prometheus_client: {verdict(met)}"
        otel_cell = otel_ratio = ""
        if otel_name is not None:
            speedup = ns[otel_name] / ns[mine]
            met_otel = speedup >= 5
            met &= met_otel
            target += f"; >= 5x faster than the SDK: {verdict(met_otel)}"
            otel_cell, otel_ratio = f"{ns[otel_name]:,.0f}", f"{speedup:.1f}x"
        ok &= met
        lines.append(f"| {label} | {ns[mine]:,.0f} | {ns[pc_name]:,.0f} | {otel_cell} | {ratio:.2f} | {otel_ratio} | "
                     f"{target} |")
    return lines, ok


# --- 4: overflow -------------------------------------------------------------------------------------------

def bench_overflow() -> tuple[list[str], bool]:
    """A family with OVERFLOW_LIMIT label sets: a cached label set, one overflowed label set repeated, and a
    stream of distinct new label sets (each seen once) past the limit."""
    n = RECORD_CALLS
    limits = {RUNS_TOTAL: OVERFLOW_LIMIT, RUNS_DURATION: OVERFLOW_LIMIT}
    registry = Registry(limits=limits)
    # setup() applies its settings' limits to the registry: the same limits go in as settings.
    with ours(registry, cardinality_limits=limits) as t:
        counter, record = registry.counter(RUNS_TOTAL), t.recorders.runs.record
        assert counter.limit == OVERFLOW_LIMIT and registry.histogram(RUNS_DURATION).limit == OVERFLOW_LIMIT
        for i in range(OVERFLOW_LIMIT):  # fill both families
            record(f"cmd-{i}", is_ci=True, status=0, duration_ms=5.0)
        cached, over = ("cmd-0", "true", "0"), ("over", "true", "0")
        assert not getattr(counter.labels(*cached), "overflow", False)
        assert counter.labels(*over).overflow, "the overflowed label set did not overflow"
        ids = itertools.count()

        # Each contender is made before its timed run: (b) gets n label sets never seen before on every run.
        def cached_inc() -> Callable[[], None]:
            def run() -> None:
                for _ in range(n):
                    counter.labels(*cached).inc()
            return run

        def over_inc() -> Callable[[], None]:
            def run() -> None:
                for _ in range(n):
                    counter.labels(*over).inc()
            return run

        def new_inc() -> Callable[[], None]:
            sets = [(f"new-{next(ids)}", "true", "0") for _ in range(n)]

            def run() -> None:
                for values in sets:
                    counter.labels(*values).inc()
            return run

        def cached_record() -> Callable[[], None]:
            def run() -> None:
                for _ in range(n):
                    record("cmd-0", is_ci=True, status=0, duration_ms=420.0)
            return run

        def over_record() -> Callable[[], None]:
            def run() -> None:
                for _ in range(n):
                    record("over", is_ci=True, status=0, duration_ms=420.0)
            return run

        def new_record() -> Callable[[], None]:
            names = [f"new-{next(ids)}" for _ in range(n)]

            def run() -> None:
                for name in names:
                    record(name, is_ci=True, status=0, duration_ms=420.0)
            return run

        makers = {"cached_inc": cached_inc, "over_inc": over_inc, "new_inc": new_inc,
                  "cached_record": cached_record, "over_record": over_record, "new_record": new_record}
        ns = dict.fromkeys(makers, float("inf"))
        for _ in range(ROUNDS):  # interleaved
            for name, make in makers.items():
                ns[name] = min(ns[name], timed(make()) / n * 1e9)
        series = len(counter.streams[0]), len(registry.histogram(RUNS_DURATION).streams[0])
        overflowed = registry.counter(OVERFLOW_METRIC).labels(RUNS_TOTAL).value
    assert series == (OVERFLOW_LIMIT, OVERFLOW_LIMIT), series
    # Every measurement past the limit (over_inc, new_inc, and the counter of over_record, new_record) counted.
    assert overflowed == 4 * ROUNDS * n, overflowed

    ok = True
    lines = [f"### Past the label-set limit (limit {OVERFLOW_LIMIT}; CPU ns per call; "
             f"{overflowed:,} measurements counted in {OVERFLOW_METRIC})", "",
             "| Operation | cached label set | (a) one overflowed label set, repeated | (a) / cached | "
             "(b) distinct new label sets | (b) / cached | target |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for label, key in (("`labels(a,b,c).inc()`", "inc"), ("`recorders.runs.record(...)`", "record")):
        cached_ns, over_ns, new_ns = ns[f"cached_{key}"], ns[f"over_{key}"], ns[f"new_{key}"]
        met = over_ns / cached_ns <= 1.5
        ok &= met
        lines.append(f"| {label} | {cached_ns:,.0f} | {over_ns:,.0f} | {over_ns / cached_ns:.2f} | {new_ns:,.0f} | "
                     f"{new_ns / cached_ns:.2f} | (a) <= 1.5x cached: {verdict(met)}; (b) reported |")
    return lines, ok


# --- 5: scrape ---------------------------------------------------------------------------------------------

def host(i: int) -> str:
    return f"host-{i:05d}.example.com"


SERIES_VALUES = [("GET", host(i), ("200", "404", "503")[i % 3]) for i in range(SERIES)]
OBSERVATIONS = (lambda i: i * 1_000.0, lambda i: i * 250_000.0 + 0.5, lambda i: 3e9)


def fill_ours(registry: Registry, kind: str) -> None:
    if kind == "counter":
        family = registry.counter(HTTP_REQUEST_COUNT)
        for i, v in enumerate(SERIES_VALUES):
            family.labels(*v).inc(i + 1)
    else:
        hfamily = registry.histogram(HTTP_REQUEST_DURATION)
        for i, v in enumerate(SERIES_VALUES):
            for x in OBSERVATIONS:
                hfamily.labels(*v).observe(x(i))


def ours_scraper(registry: Registry, kind: str, extra_reader: bool) -> Iterator[Callable[[], bytes]]:
    """A scrape of ``registry`` filled with ``kind`` series, with or without an extra InMemoryMetricReader."""
    readers = [InMemoryMetricReader()] if extra_reader else []
    with ours(registry, cardinality_limit=2 * SERIES, metric_readers=readers) as t:
        fill_ours(registry, kind)
        yield lambda: t.scrape().encode()


def anchors(kind: str) -> tuple[Callable[[], bytes], Callable[[], bytes], Callable[[], None]]:
    """prometheus_client's and the stock OTel reader's scrape of the same series, and their cleanup."""
    pc = CollectorRegistry()
    if kind == "counter":
        pc_metric: Any = PcCounter(REQUESTS.name, REQUESTS.help, REQUESTS.labels, registry=pc)
    else:
        pc_metric = PcHistogram(REQUEST_NS.name, REQUEST_NS.help, REQUEST_NS.labels, buckets=REQUEST_NS.buckets,
                                registry=pc)
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    stock = PrometheusMetricReader()
    REGISTRY.unregister(stock._collector)  # on a private registry: no process/gc collectors in the timing
    stock_registry = CollectorRegistry()
    stock_registry.register(stock._collector)
    provider = MeterProvider(resource=Resource({"service.name": "bench"}), metric_readers=[stock], views=[
        View(instrument_name=REQUEST_NS.name, aggregation=ExplicitBucketHistogramAggregation(REQUEST_NS.buckets))],
        shutdown_on_exit=False)
    meter = provider.get_meter(SCOPE_NAME)
    if kind == "counter":
        otel_counter = meter.create_counter(REQUESTS.name, unit=REQUESTS.unit)
        for i, v in enumerate(SERIES_VALUES):
            pc_metric.labels(*v).inc(i + 1)
            otel_counter.add(i + 1, dict(zip(REQUESTS.labels, v, strict=True)))
    else:
        otel_hist = meter.create_histogram(REQUEST_NS.name, unit=REQUEST_NS.unit)
        for i, v in enumerate(SERIES_VALUES):
            for x in OBSERVATIONS:
                pc_metric.labels(*v).observe(x(i))
                otel_hist.record(x(i), dict(zip(REQUEST_NS.labels, v, strict=True)))

    def cleanup() -> None:
        REGISTRY.register(stock._collector)  # it unregisters itself from the global registry on shutdown
        provider.shutdown()
    return (lambda: generate_latest(pc)), (lambda: generate_latest(stock_registry)), cleanup


def scrape_times(kind: str) -> tuple[dict[str, float], dict[str, int]]:
    """Best seconds per scrape and body size, per contender, for ``kind`` series."""
    seconds: dict[str, float] = {}
    sizes: dict[str, int] = {}

    def measure(name: str, fn: Callable[[], bytes], times: int) -> None:
        for _ in range(times):
            gc.collect()
            gc.disable()
            try:
                start = clock()
                body = fn()
                elapsed = clock() - start
            finally:
                gc.enable()
            sizes[name] = len(body)
            seconds[name] = min(seconds.get(name, float("inf")), elapsed)

    pc_scrape, stock_scrape, cleanup = anchors(kind)
    scrapers = ours_scraper(Registry(), kind, extra_reader=False)
    ours_scrape = next(scrapers)
    body = ours_scrape().decode()
    sample = REQUESTS.name if kind == "counter" else f"{REQUEST_NS.name}_count"
    assert body.count(f"\n{sample}{{") == SERIES, "ours did not render every series"
    for _ in range(SCRAPE_ROUNDS):  # interleaved
        measure("ours", ours_scrape, OURS_SCRAPES_PER_ROUND)
        measure("prometheus_client", pc_scrape, 1)
        measure("stock", stock_scrape, 1)
    next(scrapers, None)  # shuts ours down
    cleanup()

    # The same scrape with the catalogue announced to the SDK (a second reader on the provider).
    scrapers = ours_scraper(Registry(), kind, extra_reader=True)
    extra_scrape = next(scrapers)
    for _ in range(SCRAPE_ROUNDS):
        measure("extra", extra_scrape, OURS_SCRAPES_PER_ROUND)
    next(scrapers, None)
    return seconds, sizes


def bench_scrape() -> tuple[list[str], bool]:
    lines = [f"### Full scrape, {SERIES:,} series (CPU seconds; ours best of {SCRAPE_ROUNDS * OURS_SCRAPES_PER_ROUND}, "
             f"anchors best of {SCRAPE_ROUNDS})", "",
             "| Series | ours `Telemetry.scrape()` | prometheus_client `generate_latest` | stock OTel "
             "`PrometheusMetricReader` | prometheus_client / ours | stock OTel / ours | body (ours / pc / stock) | "
             "target | ours + extra InMemoryMetricReader | (that) / ours |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: |"]
    ok = True
    for kind, label in (("counter", "counters (3 labels)"),
                        ("histogram", f"histograms (3 labels, {len(REQUEST_NS.buckets)} buckets)")):
        seconds, sizes = scrape_times(kind)
        mine, pc, stock, extra = (seconds[n] for n in ("ours", "prometheus_client", "stock", "extra"))
        met = pc / mine >= 2 and stock / mine >= 2
        ok &= met
        lines.append(f"| {label} | {mine:.4f} | {pc:.3f} | {stock:.3f} | {pc / mine:.1f}x | {stock / mine:.1f}x | "
                     f"{sizes['ours'] / 1e6:.2f} / {sizes['prometheus_client'] / 1e6:.2f} / "
                     f"{sizes['stock'] / 1e6:.2f} MB | >= 2x both: {verdict(met)} | {extra:.4f} | "
                     f"{extra / mine:.2f} |")
    return lines, ok


# --- 6: memory ---------------------------------------------------------------------------------------------

Recorder = Callable[[tuple[str, str, str]], None]


def per_series_bytes(make: Callable[[], Iterator[Recorder]], n: int = SERIES,
                     after: Callable[[], object] | None = None) -> float:
    """Bytes held per new series (label values made before tracing, so only the store is counted);
    ``after`` runs inside the traced window (a scrape, to count what the renderer keeps per series)."""
    values = [("GET", host(i), "200") for i in range(n)]
    session = make()
    record = next(session)
    try:
        record(("GET", "warm-up", "200"))
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for v in values:
            record(v)
        if after is not None:
            after()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    finally:
        next(session, None)
    return held / n


def bench_memory() -> tuple[list[str], bool]:
    scrape: list[Callable[[], object]] = []

    def ours_make(kind: str, extra_reader: bool = False) -> Callable[[], Iterator[Recorder]]:
        def make() -> Iterator[Recorder]:
            registry = Registry()
            readers = [InMemoryMetricReader()] if extra_reader else []
            with ours(registry, cardinality_limit=2 * SERIES, metric_readers=readers) as t:
                scrape[:] = [t.scrape]
                if kind == "counter":
                    family: Any = registry.counter(HTTP_REQUEST_COUNT)
                    yield lambda v: family.labels(*v).inc()
                else:
                    hfamily = registry.histogram(HTTP_REQUEST_DURATION)
                    yield lambda v: hfamily.labels(*v).observe(5e6)
        return make

    def pc_make(kind: str) -> Callable[[], Iterator[Recorder]]:
        def make() -> Iterator[Recorder]:
            registry = CollectorRegistry()
            if kind == "counter":
                metric: Any = PcCounter(REQUESTS.name, "h", REQUESTS.labels, registry=registry)
                yield lambda v: metric.labels(*v).inc()
            else:
                metric = PcHistogram(REQUEST_NS.name, "h", REQUEST_NS.labels, buckets=REQUEST_NS.buckets,
                                     registry=registry)
                yield lambda v: metric.labels(*v).observe(5e6)
        return make

    def otel_make(kind: str) -> Callable[[], Iterator[Recorder]]:
        def make() -> Iterator[Recorder]:
            provider, _ = plain_sdk([REQUESTS, REQUEST_NS])
            meter = provider.get_meter(SCOPE_NAME)
            names = REQUESTS.labels
            if kind == "counter":
                c = meter.create_counter(REQUESTS.name)
                yield lambda v: c.add(1, dict(zip(names, v, strict=True)))
            else:
                h = meter.create_histogram(REQUEST_NS.name)
                yield lambda v: h.record(5e6, dict(zip(names, v, strict=True)))
            provider.shutdown()
        return make

    lines = [f"### Memory per series (tracemalloc, {SERIES:,} new series, bytes)", "",
             "| Series | ours (default setup) | prometheus_client | ours / prometheus_client | target | "
             "ours + extra InMemoryMetricReader | ours, after one scrape (renderer's label text) | OTel SDK |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    ok = True
    for kind, label in (("counter", "counter (3 labels)"),
                        ("histogram", f"histogram (3 labels, {len(REQUEST_NS.buckets)} buckets)")):
        mine = per_series_bytes(ours_make(kind))
        pc = per_series_bytes(pc_make(kind))
        extra = per_series_bytes(ours_make(kind, extra_reader=True))
        scraped = per_series_bytes(ours_make(kind), after=lambda: scrape[0]())
        otel = per_series_bytes(otel_make(kind))
        met = mine <= pc
        ok &= met
        lines.append(f"| {label} | {mine:,.0f} | {pc:,.0f} | {mine / pc:.2f} | <= prometheus_client: "
                     f"{verdict(met)} | {extra:,.0f} | {scraped:,.0f} | {otel:,.0f} |")
    return lines, ok


# --- 7: the same numbers as the SDK ------------------------------------------------------------------------

def points(data: MetricsData | None) -> dict[tuple[str, tuple[tuple[str, Any], ...]], tuple[Any, ...]]:
    """The two runs families' points, with each metric's identity (unit, description, type, temporality)."""
    assert data is not None
    out = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name not in (RUNS.name, RUN_MS.name):
                    continue
                metric: Any = m.data
                identity = (m.unit, m.description, type(metric).__name__, metric.aggregation_temporality,
                            getattr(metric, "is_monotonic", None))
                p: Any
                for p in metric.data_points:
                    key = (m.name, tuple(sorted(p.attributes.items())))
                    out[key] = (identity, *((p.count, p.sum, tuple(p.bucket_counts), tuple(p.explicit_bounds),
                                             p.min, p.max) if isinstance(p, HistogramDataPoint) else (p.value,)))
    return out


def expected_lines(sdk: dict[tuple[str, tuple[tuple[str, Any], ...]], tuple[Any, ...]]) -> set[str]:
    """The /metrics sample lines the SDK's points stand for."""
    out = set()
    for (name, attributes), (_, *value) in sdk.items():
        names = RUNS.labels
        inner = label_inner(names, [dict(attributes)[n] for n in names])
        if name == RUNS.name:
            out.add(f"{name}{{{inner[:-1]}}} {format_float(value[0])}")
            continue
        count, total, buckets, bounds, _, _ = value
        cumulative = 0
        for bound, n in zip([*bounds, float("inf")], buckets, strict=True):
            cumulative += n
            out.add(f'{name}_bucket{{{inner}le="{format_float(float(bound))}"}} {cumulative}')
        out.add(f"{name}_sum{{{inner[:-1]}}} {format_float(total)}")
        out.add(f"{name}_count{{{inner[:-1]}}} {count}")
    return out


def check_same_numbers() -> tuple[list[str], bool]:
    calls = 20_000
    provider, sdk_reader = plain_sdk([RUNS, RUN_MS])
    meter = provider.get_meter(SCOPE_NAME)
    counter = meter.create_counter(RUNS.name, unit=RUNS.unit, description=RUNS.help)
    hist = meter.create_histogram(RUN_MS.name, unit=RUN_MS.unit, description=RUN_MS.help)
    reader = InMemoryMetricReader()
    with ours(Registry(), metric_readers=[reader]) as t:
        for i in range(calls):
            (name, is_ci, status), attrs = ARGS[i % len(ARGS)], ATTRS[i % len(ATTRS)]
            v = DURATIONS[i % len(DURATIONS)] + (i % 7) * 0.25
            t.recorders.runs.record(name, is_ci=is_ci, status=status, duration_ms=v)
            counter.add(1, attrs)
            hist.record(v, attrs)
        mine = points(reader.get_metrics_data())
        text = t.scrape()
    sdk = points(sdk_reader.get_metrics_data())
    provider.shutdown()
    same = mine == sdk and len(sdk) == 2 * len(LABELS)
    families = (f"{RUNS.name}{{", f"{RUN_MS.name}_bucket{{", f"{RUN_MS.name}_sum{{", f"{RUN_MS.name}_count{{")
    shown = {line for line in text.splitlines() if line.startswith(families)}
    want = expected_lines(sdk)
    lines_equal = shown == want
    ok = same and lines_equal
    return [f"Same numbers as the plain OTel SDK for {calls:,} `runs.record` calls, collected by an "
            f"InMemoryMetricReader on the catalogue's provider: {len(sdk)} points "
            f"{'equal' if same else 'DIFFER'}; /metrics: {len(shown):,} sample lines "
            f"{'all equal to' if lines_equal else 'NOT equal to'} the {len(want):,} the SDK's points give: "
            f"{verdict(ok)}"], ok


def main() -> int:
    for name in ("OTEL_METRICS_EXPORTER", "OTEL_SDK_DISABLED"):  # ours is the default setup, nothing exported
        os.environ.pop(name, None)
    print("## bench_core: recording, overflow, scrape and memory of the catalogue store\n")
    print(f"Python {sys.version.split()[0]}; {RECORD_CALLS:,} calls per recording round "
          f"({OTEL_RECORD_CALLS:,} for the OTel SDK), {ROUNDS} interleaved rounds, best kept.\n")
    started = time.perf_counter()
    ok = True
    for section in (bench_recording, bench_overflow, check_same_numbers, bench_scrape, bench_memory):
        lines, met = section()
        ok &= met
        print("\n".join(lines), end="\n\n", flush=True)
    print(f"bench_core: {'all targets met' if ok else 'TARGET MISSED'} ({time.perf_counter() - started:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # a benchmark that cannot run is not a missed target
        traceback.print_exc()
        sys.exit(2)
