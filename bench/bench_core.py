"""Core benchmarks: recording cost, /metrics render time at 10,000 series, memory per series.

Compared in the same run against prometheus_client (0.26) and the plain OpenTelemetry SDK path (1.45.1, with
the stock ``opentelemetry.exporter.prometheus.PrometheusMetricReader`` for rendering). Prints Markdown tables
and exits 1 if a target is missed:

- recording a counter increment / a histogram observation with three labels through the public API (label
  set resolved on every call) costs no more than prometheus_client's ``labels(...).inc()`` /
  ``labels(...).observe()``; the /metrics numbers equal what the OpenTelemetry SDK records for the same calls;
- rendering /metrics for 10,000 counter series and for 10,000 histogram series is at least 2x faster than
  prometheus_client's ``generate_latest`` and than the stock OpenTelemetry Prometheus reader.

Run: ``.venv/bin/python bench/bench_core.py`` (or ``make bench``). Timings are the best of several rounds,
interleaved, so a noisy neighbour on a shared machine hurts every contender alike.
"""

from __future__ import annotations

import gc
import itertools
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client import Counter as PcCounter
from prometheus_client import Histogram as PcHistogram
from telemetry.otel import to_metrics_data

from telemetry.catalogue import HTTP_REQUEST_COUNT, HTTP_REQUEST_DURATION, RUNS_DURATION, RUNS_TOTAL, spec
from telemetry.exposition.reader import PrometheusReader
from telemetry.recorders import Recorders
from telemetry.registry import Registry, label_inner

RUNS = spec(RUNS_TOTAL)
RUN_MS = spec(RUNS_DURATION)
REQUESTS = spec(HTTP_REQUEST_COUNT)
REQUEST_NS = spec(HTTP_REQUEST_DURATION)
SERIES = 10_000
RECORD_CALLS = 60_000
OTEL_RECORD_CALLS = 15_000  # the SDK path is ~10x slower; fewer calls keep the run short
ROUNDS = 5
RENDER_ROUNDS = 2  # prometheus_client and the stock reader take seconds per histogram render

# 24 label sets, cycled, so every contender resolves a label set on every call as a service would.
COMMANDS = ("build", "test", "generate", "cache", "share", "run")
LABELS = [(c, ci, st) for c in COMMANDS for ci in ("true", "false") for st in ("0", "1")]
ARGS = [(c, ci == "true", int(st)) for c, ci, st in LABELS]
ATTRS = [dict(zip(RUNS.labels, values, strict=True)) for values in LABELS]
DURATIONS = [float(v) for v in (80, 420, 999, 2_600, 7_000, 45_000, 200_000, 4_000_000)]


def best(fn: Callable[[], object], rounds: int = ROUNDS) -> float:
    """Best wall time of ``fn`` over ``rounds`` runs, garbage collector paused."""
    times = []
    for _ in range(rounds):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        finally:
            gc.enable()
    return min(times)


# --- recording ------------------------------------------------------------------------------------------------

def recording_contenders() -> dict[str, tuple[Callable[[], None], int]]:
    """Each contender, and how many calls it makes cycling over the label sets."""
    labels = list(itertools.islice(itertools.cycle(LABELS), RECORD_CALLS))
    args = list(itertools.islice(itertools.cycle(ARGS), RECORD_CALLS))
    attrs = list(itertools.islice(itertools.cycle(ATTRS), RECORD_CALLS))
    durations = list(itertools.islice(itertools.cycle(DURATIONS), RECORD_CALLS))
    pairs = list(zip(labels, durations, strict=True))

    registry = Registry()
    recorders = Recorders(registry)
    pc = CollectorRegistry()
    pc_counter = PcCounter("tuist_runs", RUNS.help, RUNS.labels, registry=pc)
    pc_hist = PcHistogram(RUN_MS.name, RUN_MS.help, RUN_MS.labels, buckets=RUN_MS.buckets, registry=pc)
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()], views=[
        View(instrument_name=RUN_MS.name, aggregation=ExplicitBucketHistogramAggregation(RUN_MS.buckets))],
        shutdown_on_exit=False)
    meter = provider.get_meter("bench")
    otel_counter = meter.create_counter(RUNS.name, unit=RUNS.unit)
    otel_hist = meter.create_histogram(RUN_MS.name, unit=RUN_MS.unit)

    def ours_counter() -> None:
        for values in labels:
            registry.counter(RUNS_TOTAL).labels(*values).inc()

    def ours_hist() -> None:
        for values, v in pairs:
            registry.histogram(RUNS_DURATION).labels(*values).observe(v)

    def ours_runs_record() -> None:
        record = recorders.runs.record
        for (name, is_ci, status), v in zip(args, durations, strict=True):
            record(name, is_ci=is_ci, status=status, duration_ms=v)

    def pc_inc() -> None:
        for values in labels:
            pc_counter.labels(*values).inc()

    def pc_observe() -> None:
        for values, v in pairs:
            pc_hist.labels(*values).observe(v)

    def pc_both() -> None:
        for values, v in pairs:
            pc_counter.labels(*values).inc()
            pc_hist.labels(*values).observe(v)

    otel_attrs = attrs[:OTEL_RECORD_CALLS]
    otel_pairs = list(zip(otel_attrs, durations, strict=False))

    def otel_add() -> None:
        for a in otel_attrs:
            otel_counter.add(1, a)

    def otel_record() -> None:
        for a, v in otel_pairs:
            otel_hist.record(v, a)

    n = RECORD_CALLS
    return {"ours_counter": (ours_counter, n), "ours_hist": (ours_hist, n), "ours_runs_record": (ours_runs_record, n),
            "pc_counter": (pc_inc, n), "pc_hist": (pc_observe, n), "pc_both": (pc_both, n),
            "otel_counter": (otel_add, OTEL_RECORD_CALLS), "otel_hist": (otel_record, OTEL_RECORD_CALLS)}


def bench_recording() -> tuple[list[str], bool]:
    contenders = recording_contenders()
    ns: dict[str, float] = {name: float("inf") for name in contenders}
    for _ in range(ROUNDS):  # interleaved rounds
        for name, (fn, calls) in contenders.items():
            ns[name] = min(ns[name], best(fn, 1) / calls * 1e9)
    otel_both = ns["otel_counter"] + ns["otel_hist"]
    rows = [
        ("counter `.labels(a,b,c).inc()`", ns["ours_counter"], ns["pc_counter"], ns["otel_counter"]),
        ("histogram `.labels(a,b,c).observe(v)`", ns["ours_hist"], ns["pc_hist"], ns["otel_hist"]),
        ("`recorders.runs.record(...)` (both)", ns["ours_runs_record"], ns["pc_both"], otel_both),
    ]
    lines = ["### Recording, three labels, label set resolved on every call (ns per call)", "",
             "| Operation | ours | prometheus_client | OTel SDK | ours / prometheus_client | OTel / ours | "
             "target |", "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    ok = True
    for label, ours, pc, otel in rows:
        met = ours <= pc
        ok &= met
        lines.append(f"| {label} | {ours:,.0f} | {pc:,.0f} | {otel:,.0f} | {ours / pc:.2f} | {otel / ours:.1f}x | "
                     f"ours <= prometheus_client: {'met' if met else 'MISSED'} |")
    return lines, ok


def check_same_numbers() -> tuple[list[str], bool]:
    """The same calls through the registry and through the plain SDK give the same points."""
    registry = Registry()
    recorders = Recorders(registry)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=[
        View(instrument_name=RUN_MS.name, aggregation=ExplicitBucketHistogramAggregation(RUN_MS.buckets))],
        shutdown_on_exit=False)
    meter = provider.get_meter("bench")
    counter = meter.create_counter(RUNS.name, unit=RUNS.unit, description=RUNS.help)
    hist = meter.create_histogram(RUN_MS.name, unit=RUN_MS.unit, description=RUN_MS.help)
    for i in range(20_000):
        (name, is_ci, status), attrs = ARGS[i % len(ARGS)], ATTRS[i % len(ATTRS)]
        v = DURATIONS[i % len(DURATIONS)] + (i % 7) * 0.25
        recorders.runs.record(name, is_ci=is_ci, status=status, duration_ms=v)
        counter.add(1, attrs)
        hist.record(v, attrs)
    sdk_data = reader.get_metrics_data()
    provider.shutdown()
    assert sdk_data is not None
    ours_data = to_metrics_data(registry, Resource.get_empty(), 0)

    def points(data: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], tuple[Any, ...]]:
        out = {}
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name not in (RUNS.name, RUN_MS.name):
                        continue
                    for p in m.data.data_points:
                        key = (m.name, tuple(sorted(p.attributes.items())))
                        out[key] = ((p.count, p.sum, tuple(p.bucket_counts), p.min, p.max)
                                    if isinstance(p, HistogramDataPoint) else (p.value,))
        return out

    ours, sdk = points(ours_data), points(sdk_data)
    same = ours == sdk and len(sdk) == 2 * len(LABELS)
    # And /metrics shows exactly those numbers.
    text = PrometheusReader(registry).scrape()
    shown = all(f"{RUNS.name}{{{label_inner(RUNS.labels, [dict(key)[n] for n in RUNS.labels])[:-1]}}} "
                f"{value[0]}\n" in text for (name, key), value in sdk.items() if name == RUNS.name)
    ok = same and shown
    return [f"Same numbers as the OTel SDK path for 20,000 `runs.record` calls ({len(sdk)} points compared, "
            f"and on /metrics): {'yes' if ok else 'NO'}"], ok


# --- rendering ------------------------------------------------------------------------------------------------

def host(i: int) -> str:
    return f"host-{i:05d}.example.com"


def render_contenders(kind: str) -> dict[str, tuple[Callable[[], bytes], Callable[[], None]]]:
    """For ``kind`` counter or histogram: (render, cleanup) per contender over the same SERIES series."""
    out: dict[str, tuple[Callable[[], bytes], Callable[[], None]]] = {}
    values = [("GET", host(i), ("200", "404", "503")[i % 3]) for i in range(SERIES)]

    registry = Registry(cardinality_limit=SERIES * 2)
    reader = PrometheusReader(registry)
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
    meter = provider.get_meter("bench")
    if kind == "counter":
        otel_counter = meter.create_counter(REQUESTS.name)
        family = registry.counter(REQUESTS.name)
        for i, v in enumerate(values):
            family.labels(*v).inc(i + 1)
            pc_metric.labels(*v).inc(i + 1)
            otel_counter.add(i + 1, dict(zip(REQUESTS.labels, v, strict=True)))
    else:
        otel_hist = meter.create_histogram(REQUEST_NS.name, unit=REQUEST_NS.unit)
        hfamily = registry.histogram(REQUEST_NS.name)
        for i, v in enumerate(values):
            for x in (i * 1_000.0, i * 250_000.0 + 0.5, 3e9):
                hfamily.labels(*v).observe(x)
                pc_metric.labels(*v).observe(x)
                otel_hist.record(x, dict(zip(REQUEST_NS.labels, v, strict=True)))

    def stock_cleanup() -> None:
        REGISTRY.register(stock._collector)  # it unregisters itself from the global registry on shutdown
        provider.shutdown()

    out["ours"] = (lambda: reader.scrape().encode(), lambda: None)
    out["prometheus_client"] = (lambda: generate_latest(pc), lambda: None)
    out["stock OTel reader"] = (lambda: generate_latest(stock_registry), stock_cleanup)
    return out


def bench_render() -> tuple[list[str], bool]:
    lines = [f"### Rendering /metrics, {SERIES:,} series (seconds, best of {RENDER_ROUNDS})", "",
             "| Series | ours | prometheus_client `generate_latest` | stock OTel `PrometheusMetricReader` | "
             "prometheus_client / ours | stock OTel / ours | body (ours / pc / stock) | target |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    ok = True
    for kind, label in (("counter", "counters (3 labels)"),
                        ("histogram", f"histograms (3 labels, {len(REQUEST_NS.buckets)} buckets)")):
        contenders = render_contenders(kind)
        seconds: dict[str, float] = {n: float("inf") for n in contenders}
        sizes: dict[str, int] = {}
        for _ in range(RENDER_ROUNDS):
            for name, (fn, _) in contenders.items():
                gc.collect()
                gc.disable()
                try:
                    start = time.perf_counter()
                    sizes[name] = len(fn())
                    seconds[name] = min(seconds[name], time.perf_counter() - start)
                finally:
                    gc.enable()
        for _, cleanup in contenders.values():
            cleanup()
        ours, pc, stock = seconds["ours"], seconds["prometheus_client"], seconds["stock OTel reader"]
        met = pc / ours >= 2 and stock / ours >= 2
        ok &= met
        lines.append(f"| {label} | {ours:.3f} | {pc:.3f} | {stock:.3f} | {pc / ours:.1f}x | {stock / ours:.1f}x | "
                     f"{sizes['ours'] / 1e6:.1f} / {sizes['prometheus_client'] / 1e6:.1f} / "
                     f"{sizes['stock OTel reader'] / 1e6:.1f} MB | >= 2x both: {'met' if met else 'MISSED'} |")
    return lines, ok


# --- memory ---------------------------------------------------------------------------------------------------

def per_series_bytes(make: Callable[[], Callable[[tuple[str, str, str]], None]], n: int = SERIES) -> float:
    """Bytes allocated per new series (label values made before tracing, so only the store is counted)."""
    values = [("GET", host(i), "200") for i in range(n)]
    record = make()
    record(("GET", "warm-up", "200"))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for v in values:
        record(v)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / n


def bench_memory() -> list[str]:
    def ours(kind: str) -> Callable[[], Callable[[tuple[str, str, str]], None]]:
        def make() -> Callable[[tuple[str, str, str]], None]:
            registry = Registry(cardinality_limit=SERIES * 2)
            if kind == "counter":
                family: Any = registry.counter(REQUESTS.name)
                return lambda v: family.labels(*v).inc()
            hfamily = registry.histogram(REQUEST_NS.name)
            return lambda v: hfamily.labels(*v).observe(5e6)
        return make

    def pc(kind: str) -> Callable[[], Callable[[tuple[str, str, str]], None]]:
        def make() -> Callable[[tuple[str, str, str]], None]:
            registry = CollectorRegistry()
            if kind == "counter":
                metric: Any = PcCounter(REQUESTS.name, "h", REQUESTS.labels, registry=registry)
                return lambda v: metric.labels(*v).inc()
            metric = PcHistogram(REQUEST_NS.name, "h", REQUEST_NS.labels, buckets=REQUEST_NS.buckets,
                                 registry=registry)
            return lambda v: metric.labels(*v).observe(5e6)
        return make

    def otel(kind: str) -> Callable[[], Callable[[tuple[str, str, str]], None]]:
        def make() -> Callable[[tuple[str, str, str]], None]:
            provider = MeterProvider(metric_readers=[InMemoryMetricReader()], views=[View(
                instrument_name=REQUEST_NS.name, aggregation=ExplicitBucketHistogramAggregation(REQUEST_NS.buckets))],
                shutdown_on_exit=False)
            meter = provider.get_meter("bench")
            names = REQUESTS.labels
            if kind == "counter":
                c = meter.create_counter(REQUESTS.name)
                return lambda v: c.add(1, dict(zip(names, v, strict=True)))
            h = meter.create_histogram(REQUEST_NS.name)
            return lambda v: h.record(5e6, dict(zip(names, v, strict=True)))
        return make

    lines = [f"### Memory per series (tracemalloc, {SERIES:,} new series, bytes)", "",
             "| Series | ours | prometheus_client | OTel SDK |", "| --- | ---: | ---: | ---: |"]
    for kind, label in (("counter", "counter (3 labels)"),
                        ("histogram", f"histogram (3 labels, {len(REQUEST_NS.buckets)} buckets)")):
        row = [per_series_bytes(f(kind)) for f in (ours, pc, otel)]
        lines.append(f"| {label} | {row[0]:,.0f} | {row[1]:,.0f} | {row[2]:,.0f} |")
    return lines


def main() -> int:
    print("## bench_core: recording, rendering and memory of the catalogue store\n")
    print(f"Python {sys.version.split()[0]}; {RECORD_CALLS:,} calls per recording round "
          f"({OTEL_RECORD_CALLS:,} for the OTel SDK), {ROUNDS} interleaved rounds, best kept.\n")
    started = time.perf_counter()
    recording, recording_ok = bench_recording()
    print("\n".join(recording), end="\n\n")
    same, same_ok = check_same_numbers()
    print("\n".join(same), end="\n\n")
    rendering, render_ok = bench_render()
    print("\n".join(rendering), end="\n\n")
    print("\n".join(bench_memory()), end="\n\n")
    ok = recording_ok and same_ok and render_ok
    print(f"bench_core: {'all targets met' if ok else 'TARGET MISSED'} ({time.perf_counter() - started:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
