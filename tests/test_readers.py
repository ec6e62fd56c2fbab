"""Every OpenTelemetry reader on the package's MeterProvider sees the catalogue with the numbers /metrics shows.

Real components throughout: ``telemetry.setup()`` with its /metrics endpoint on loopback, the SDK's
``InMemoryMetricReader``, the stock ``PeriodicExportingMetricReader`` with the stock ``OTLPMetricExporter``
(pushing protobuf over HTTP to ``tests.otlp_receiver.OtlpReceiver``) or ``ConsoleMetricExporter``, and the SDK
``TracerProvider`` for exemplars. /metrics is fetched over HTTP and parsed with prometheus_client's parser.
"""

from __future__ import annotations

import io
import json
import time
import urllib.request
from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality as PbTemporality
from opentelemetry.sdk.metrics import Counter, Histogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ConsoleMetricExporter,
    Gauge,
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client.parser import text_string_to_metric_families

import telemetry
from telemetry.catalogue import (
    BOOL_VALUES,
    CATALOGUE,
    HTTP_REQUEST_COUNT,
    OVERFLOW_METRIC,
    REPO_QUERY_DURATION,
    RUNS_DURATION,
    RUNS_TOTAL,
    SCOPE_NAME,
    STATUS_VALUES,
    Kind,
    MetricSpec,
    storage_names,
)
from telemetry.cells import EXEMPLARS
from telemetry.registry import LabelValue, Registry
from telemetry.testing import parse_exposition
from tests.otlp_receiver import OtlpReceiver, attributes, metrics_by_name, resource_attributes
from tests.test_otel_equivalence import values_for

SPECS = [s for s in CATALOGUE if s.name != OVERFLOW_METRIC]
BY_NAME = {s.name: s for s in CATALOGUE}
HOUR_MS = 3_600_000  # an export interval no test waits for: exports happen on force_flush only
INF = float("inf")


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    """One loopback OTLP receiver for the module (hypothesis examples included); cleared per use."""
    with OtlpReceiver() as rx:
        yield rx


@pytest.fixture(autouse=True)
def _no_telemetry_left_over() -> Iterator[None]:
    telemetry.shutdown()
    yield
    telemetry.shutdown()


def otlp_reader(rx: OtlpReceiver) -> PeriodicExportingMetricReader:
    return PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=rx.metrics_url, timeout=10),
                                         export_interval_millis=HOUR_MS)


def fetch(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
    with opener.open(url, timeout=10) as response:
        assert response.status == 200
        return str(response.read().decode())


def flush_one(t: telemetry.Telemetry, rx: OtlpReceiver) -> Any:
    """force_flush the provider (every reader collects, the OTLP reader exports) and return the request it
    sent."""
    rx.clear()
    assert t.meter_provider is not None
    assert t.meter_provider.force_flush(timeout_millis=10_000)
    [request] = rx.wait_for(1)
    return request


# --- activity -----------------------------------------------------------------------------------------------

# Values for labels without a documented set: quotes, backslashes, newlines, non-ASCII, exposition syntax.
FREE_VALUES = ("a", "b-1", 'quo"te', "back\\slash", "new\nline", "ünïcødé ✓", "sp ace", "{x=\"y\",z}")


def spellings(spec: MetricSpec, label: str) -> list[tuple[LabelValue, str]]:
    """(value as a caller passes it, value as /metrics and OpenTelemetry attributes show it)."""
    allowed = spec.allowed.get(label)
    if allowed == BOOL_VALUES:
        return [(True, "true"), (False, "false"), ("true", "true"), ("false", "false")]
    if allowed == STATUS_VALUES:
        return [(0, "0"), (1, "1"), ("0", "0"), ("1", "1")]
    if allowed:
        return [(v, v) for v in sorted(allowed)]
    return [*((v, v) for v in FREE_VALUES), (200, "200")]


# One measurement: spec, label values as passed, as shown, value.
Op = tuple[MetricSpec, tuple[LabelValue, ...], tuple[str, ...], float]


@st.composite
def activity(draw: st.DrawFn) -> list[Op]:
    ops: list[Op] = []
    for _ in range(draw(st.integers(1, 40))):
        s = draw(st.sampled_from(SPECS))
        picked = [draw(st.sampled_from(spellings(s, label))) for label in s.labels]
        value = draw(values_for(s))
        ops.append((s, tuple(p for p, _ in picked), tuple(shown for _, shown in picked), value))
    return ops


def every_family() -> list[Op]:
    """Every catalogue family, two or three series each, bucket bounds hit exactly."""
    ops: list[Op] = []
    for s in SPECS:
        for pick in range(2 if s.labels else 1):
            picked = []
            for i, label in enumerate(s.labels):
                options = spellings(s, label)
                picked.append(options[(3 * pick + i) % len(options)])
            passed, shown = tuple(p for p, _ in picked), tuple(v for _, v in picked)
            if s.kind is Kind.HISTOGRAM:
                ops += [(s, passed, shown, v) for v in (0, s.buckets[0], s.buckets[2] + 0.5, s.buckets[-1] * 3)]
            elif s.kind is Kind.GAUGE:
                ops += [(s, passed, shown, 5), (s, passed, shown, -2.5 * (pick + 1))]
            else:
                ops += [(s, passed, shown, 1), (s, passed, shown, 2.5 * (pick + 1))]
    return ops


def record(ops: list[Op], registry: Registry) -> None:
    for s, passed, _, value in ops:
        if s.kind is Kind.COUNTER:
            registry.counter(s.name).labels(*passed).inc(value)
        elif s.kind is Kind.GAUGE:
            registry.gauge(s.name).labels(*passed).set(value)
        else:
            registry.histogram(s.name).labels(*passed).observe(value)


# --- one normal form for the three views ------------------------------------------------------------------
# {metric name: (data kind, {sorted attribute items: point})}; a Sum/Gauge point is (value, start time), a
# histogram point (count, sum, bucket counts, bounds, min, max, start time). Start time 0 means none.

Key = tuple[tuple[str, str], ...]
View = dict[str, tuple[tuple[str, bool | None, str | None], dict[Key, tuple[Any, ...]]]]
CUMULATIVE = "cumulative"


def key_of(attrs: dict[str, Any]) -> Key:
    assert all(isinstance(v, str) for v in attrs.values()), f"label values must be strings: {attrs}"
    return tuple(sorted(attrs.items()))


def memory_view(data: MetricsData | None, *, with_meta: dict[str, tuple[str, str]] | None = None) -> View:
    """The catalogue scope of an InMemoryMetricReader's collection."""
    assert data is not None
    out: View = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            if sm.scope.name != SCOPE_NAME:
                continue
            for m in sm.metrics:
                assert m.name not in out, f"{m.name} appears twice"
                if with_meta is not None:
                    with_meta[m.name] = (m.unit or "", m.description or "")
                points: dict[Key, tuple[Any, ...]] = {}
                d = m.data
                for p in d.data_points:
                    start = p.start_time_unix_nano or 0
                    if isinstance(p, HistogramDataPoint):
                        assert not p.exemplars, f"{m.name}: an exemplar with no span current"
                        point: tuple[Any, ...] = (p.count, p.sum, tuple(p.bucket_counts),
                                                  tuple(float(b) for b in p.explicit_bounds), p.min, p.max, start)
                    else:
                        point = (p.value, start)
                    points[key_of(dict(p.attributes))] = point
                if isinstance(d, Sum):
                    kind: tuple[str, bool | None, str | None] = ("sum", d.is_monotonic,
                                                                 d.aggregation_temporality.name.lower())
                elif isinstance(d, HistogramData):
                    kind = ("histogram", None, d.aggregation_temporality.name.lower())
                else:
                    assert isinstance(d, Gauge), type(d)
                    kind = ("gauge", None, None)
                out[m.name] = (kind, points)
    return out


_PB_TEMPORALITY = {PbTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE: "cumulative",
                   PbTemporality.AGGREGATION_TEMPORALITY_DELTA: "delta"}


def otlp_view(request: Any, *, with_meta: dict[str, tuple[str, str]] | None = None) -> View:
    """The catalogue scope of a decoded OTLP ExportMetricsServiceRequest."""
    out: View = {}
    for name, m in metrics_by_name(request, SCOPE_NAME).items():
        if with_meta is not None:
            with_meta[name] = (m.unit, m.description)
        which = m.WhichOneof("data")
        points: dict[Key, tuple[Any, ...]] = {}
        for p in getattr(m, which).data_points:
            assert all(kv.value.WhichOneof("value") == "string_value" for kv in p.attributes), p.attributes
            if which == "histogram":
                assert not p.exemplars, f"{name}: an exemplar with no span current"
                point: tuple[Any, ...] = (p.count, p.sum, tuple(p.bucket_counts), tuple(p.explicit_bounds),
                                          p.min if p.HasField("min") else None,
                                          p.max if p.HasField("max") else None, p.start_time_unix_nano)
            else:
                point = (getattr(p, p.WhichOneof("value")), p.start_time_unix_nano)
            points[key_of(attributes(p.attributes))] = point
        if which == "sum":
            kind: tuple[str, bool | None, str | None] = ("sum", m.sum.is_monotonic,
                                                         _PB_TEMPORALITY[m.sum.aggregation_temporality])
        elif which == "histogram":
            kind = ("histogram", None, _PB_TEMPORALITY[m.histogram.aggregation_temporality])
        else:
            assert which == "gauge", which
            kind = ("gauge", None, None)
        out[name] = (kind, points)
    return out


# prometheus_client's parser names a counter's samples <family>_total even when the text does not (it reads
# the OpenMetrics way): map what it reports back to catalogue families, and check the raw names separately.
def _parsed_sample_names() -> dict[str, tuple[MetricSpec, str]]:
    out: dict[str, tuple[MetricSpec, str]] = {}
    for s in CATALOGUE:
        if s.kind is Kind.COUNTER:
            out[s.name if s.name.endswith("_total") else s.name + "_total"] = (s, "value")
        elif s.kind is Kind.GAUGE:
            out[s.name] = (s, "value")
        else:
            for suffix in ("_bucket", "_sum", "_count"):
                out[s.name + suffix] = (s, suffix)
    return out


PARSED = _parsed_sample_names()
PROM_TYPE = {Kind.COUNTER: "counter", Kind.GAUGE: "gauge", Kind.HISTOGRAM: "histogram"}


def prometheus_view(text: str) -> dict[str, dict[Key, Any]]:
    """The catalogue families on /metrics: {name: {labels: value | (count, sum, [(le, cumulative)])}}."""
    raw_names = {sample.name for sample in parse_exposition(text)}
    out: dict[str, dict[Key, Any]] = {}
    buckets: dict[tuple[str, Key], list[tuple[float, float]]] = {}
    sums: dict[tuple[str, Key], float] = {}
    counts: dict[tuple[str, Key], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found = PARSED.get(sample.name)
            if found is None:
                continue  # target_info, the SDK's runtime metrics
            s, role = found
            assert family.type == PROM_TYPE[s.kind], (s.name, family.type)
            labels = dict(sample.labels)
            le = labels.pop("le", None)
            key = key_of(labels)
            series = out.setdefault(s.name, {})
            if role == "value":
                series[key] = sample.value
                assert s.name in raw_names, f"{s.name} is not spelled as the catalogue says on /metrics"
                continue
            assert s.name + role in raw_names
            if role == "_bucket":
                assert le is not None
                buckets.setdefault((s.name, key), []).append((float(le), sample.value))
            elif role == "_sum":
                sums[(s.name, key)] = sample.value
            else:
                counts[(s.name, key)] = sample.value
    for (name, key), lines in buckets.items():
        out[name][key] = (counts[(name, key)], sums[(name, key)], sorted(lines))
    return out


def assert_prometheus_shows(prom: dict[str, dict[Key, Any]], otel: View) -> None:
    """Every OpenTelemetry point is on /metrics with the same numbers, and /metrics shows nothing else
    (except histogram series with no observation yet, which OpenTelemetry does not export)."""
    for name, ((kind, monotonic, temporality), points) in otel.items():
        s = BY_NAME[name]
        assert {Kind.COUNTER: "sum", Kind.GAUGE: "gauge", Kind.HISTOGRAM: "histogram"}[s.kind] == kind, name
        if s.kind is Kind.COUNTER:
            assert monotonic is True, name
        if s.kind is not Kind.GAUGE:
            assert temporality == CUMULATIVE, name
        shown = prom.get(name, {})
        extra = {k for k, v in shown.items() if k not in points and not (s.kind is Kind.HISTOGRAM and v[0] == 0)}
        assert not extra, f"{name}: on /metrics only: {extra}"
        for key, point in points.items():
            assert key in shown, f"{name}{dict(key)} is not on /metrics"
            if s.kind is Kind.HISTOGRAM:
                count, total, bucket_counts, bounds = point[:4]
                p_count, p_sum, lines = shown[key]
                assert (p_count, p_sum) == (count, total), (name, key)
                assert lines == list(zip([*bounds, INF], accumulate(bucket_counts), strict=True)), (name, key)
                assert lines[-1][1] == count
            else:
                assert shown[key] == point[0], (name, key, shown[key], point[0])
    missing = {n for n, series in prom.items() if n not in otel and any(
        not (BY_NAME[n].kind is Kind.HISTOGRAM and v[0] == 0) for v in series.values())}
    assert not missing, f"on /metrics but not collected by OpenTelemetry: {missing}"


def expected_view(ops: list[Op]) -> dict[str, dict[Key, tuple[Any, ...]]]:
    """What the activity must produce, computed independently of the package (no start times)."""
    sums: dict[tuple[str, tuple[str, ...]], float] = {}
    last: dict[tuple[str, tuple[str, ...]], float] = {}
    observed: dict[tuple[str, tuple[str, ...]], list[float]] = {}
    for s, _, shown, value in ops:
        k = (s.name, shown)
        if s.kind is Kind.COUNTER:
            sums[k] = sums.get(k, 0) + value
        elif s.kind is Kind.GAUGE:
            last[k] = value
        else:
            observed.setdefault(k, []).append(value)
    out: dict[str, dict[Key, tuple[Any, ...]]] = {}

    def key(name: str, shown: tuple[str, ...]) -> Key:
        return key_of(dict(zip(BY_NAME[name].labels, shown, strict=True)))

    for (name, shown), value in (*sums.items(), *last.items()):
        out.setdefault(name, {})[key(name, shown)] = (value,)
    for (name, shown), values in observed.items():
        bounds = BY_NAME[name].buckets
        counts = [0] * (len(bounds) + 1)
        total: float = 0
        for v in values:
            counts[bisect_left(bounds, v)] += 1
            total += v
        out.setdefault(name, {})[key(name, shown)] = (len(values), total, tuple(counts),
                                                      tuple(float(b) for b in bounds), min(values), max(values))
    return out


def assert_expected(otel: View, expected: dict[str, dict[Key, tuple[Any, ...]]]) -> None:
    for name, series in expected.items():
        assert name in otel, f"{name} was recorded but not collected"
        points = otel[name][1]
        for key, want in series.items():
            got = points.get(key)
            assert got is not None, f"{name}{dict(key)} was recorded but not collected"
            assert got[:-1] == want, (name, key, got, want)
            assert got[-1] > 0 or BY_NAME[name].kind is Kind.GAUGE, f"{name}: no start time"
    # Nothing else, except zero counters (label-less ones and the series recorders bind up front).
    for name, (_, points) in otel.items():
        for key, point in points.items():
            if key not in expected.get(name, {}):
                assert BY_NAME[name].kind is Kind.COUNTER and point[0] == 0, (name, key, point)


# --- 1. three views, one set of numbers -------------------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(ops=activity())
@example(ops=every_family())
def test_in_memory_otlp_and_metrics_agree_point_for_point(receiver: OtlpReceiver, ops: list[Op]) -> None:
    telemetry.shutdown()
    memory = InMemoryMetricReader()
    t = telemetry.setup(metrics_port=0, metrics_host="127.0.0.1", registry=Registry(), serve=True,
                        runtime_metrics=False, metric_readers=[memory, otlp_reader(receiver)])
    try:
        assert t.metrics_url is not None
        record(ops, t.registry)
        text = fetch(t.metrics_url)
        request = flush_one(t, receiver)
        memory_meta: dict[str, tuple[str, str]] = {}
        otlp_meta: dict[str, tuple[str, str]] = {}
        in_memory = memory_view(memory.get_metrics_data(), with_meta=memory_meta)
        pushed = otlp_view(request, with_meta=otlp_meta)
    finally:
        telemetry.shutdown()
    # The OTLP reader and the in-memory one collected the same thing, start times included.
    assert pushed == in_memory
    assert otlp_meta == memory_meta == {n: (BY_NAME[n].unit, BY_NAME[n].help) for n in in_memory}
    assert_expected(in_memory, expected_view(ops))
    assert_prometheus_shows(prometheus_view(text), in_memory)
    if ops == every_family():
        assert set(in_memory) == {s.name for s in SPECS}


# --- 2. exemplars over OTLP -------------------------------------------------------------------------------

def histogram_points(request: Any, name: str) -> dict[Key, Any]:
    metric = metrics_by_name(request, SCOPE_NAME)[name]
    return {key_of(attributes(p.attributes)): p for p in metric.histogram.data_points}


def labels_key(name: str, *values: str) -> Key:
    return key_of(dict(zip(BY_NAME[name].labels, values, strict=True)))


def exemplar_value(e: Any) -> float:
    return float(getattr(e, e.WhichOneof("value")))


def test_histogram_exemplars_carry_the_sampled_span_and_go_out_once(receiver: OtlpReceiver) -> None:
    t = telemetry.setup(registry=Registry(), serve=False, runtime_metrics=False,
                        metric_readers=[otlp_reader(receiver)])
    tracer = TracerProvider().get_tracer("test_readers")
    unsampled = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test_readers.off")
    query = t.registry.histogram(REPO_QUERY_DURATION)
    before = time.time_ns()
    with tracer.start_as_current_span("query") as span:
        query.labels("main", "SELECT").observe(3)
        traced = span.get_span_context()
    with tracer.start_as_current_span("run") as run_span:
        t.recorders.runs.record("build", is_ci=True, status=0, duration_ms=750.5)
        run_traced = run_span.get_span_context()
    after = time.time_ns()
    query.labels("main", "INSERT").observe(3)  # no span
    with unsampled.start_as_current_span("not sampled") as off:
        assert not off.get_span_context().trace_flags.sampled
        query.labels("main", "UPDATE").observe(3)

    first = flush_one(t, receiver)
    points = histogram_points(first, REPO_QUERY_DURATION)
    [exemplar] = points[labels_key(REPO_QUERY_DURATION, "main", "SELECT")].exemplars
    assert exemplar.trace_id == traced.trace_id.to_bytes(16, "big")
    assert exemplar.span_id == traced.span_id.to_bytes(8, "big")
    assert exemplar_value(exemplar) == 3
    assert before <= exemplar.time_unix_nano <= after
    assert not points[labels_key(REPO_QUERY_DURATION, "main", "INSERT")].exemplars, "no span: no exemplar"
    assert not points[labels_key(REPO_QUERY_DURATION, "main", "UPDATE")].exemplars, "unsampled: no exemplar"
    [run_point] = histogram_points(first, RUNS_DURATION).values()
    [run_exemplar] = run_point.exemplars
    assert (run_exemplar.trace_id, run_exemplar.span_id) == (run_traced.trace_id.to_bytes(16, "big"),
                                                             run_traced.span_id.to_bytes(8, "big"))
    assert exemplar_value(run_exemplar) == 750.5
    assert before <= run_exemplar.time_unix_nano <= after
    # The counter beside it carries the same series, without exemplars (only histogram cells keep them).
    [runs] = metrics_by_name(first, SCOPE_NAME)[RUNS_TOTAL].sum.data_points
    assert runs.as_int == 1

    # Sent once: the next export has the same counts and no exemplar.
    second = flush_one(t, receiver)
    for name in (REPO_QUERY_DURATION, RUNS_DURATION):
        for point in histogram_points(second, name).values():
            assert point.count == 1 and not point.exemplars, name
    # A new sampled measurement goes out on the next export, alone.
    with tracer.start_as_current_span("again") as again:
        query.labels("main", "SELECT").observe(40)
        again_ctx = again.get_span_context()
    third = flush_one(t, receiver)
    point = histogram_points(third, REPO_QUERY_DURATION)[labels_key(REPO_QUERY_DURATION, "main", "SELECT")]
    assert point.count == 2
    [fresh] = point.exemplars
    assert fresh.span_id == again_ctx.span_id.to_bytes(8, "big") and exemplar_value(fresh) == 40


def test_exemplar_filter_always_off_from_the_environment(receiver: OtlpReceiver,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # setup() sets this process-wide switch and shutdown() leaves it; restore it for the tests after this one.
    monkeypatch.setattr(EXEMPLARS, "enabled", EXEMPLARS.enabled)
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "always_off")
    t = telemetry.setup(registry=Registry(), serve=False, runtime_metrics=False,
                        metric_readers=[otlp_reader(receiver)])
    tracer = TracerProvider().get_tracer("test_readers")
    with tracer.start_as_current_span("sampled") as span:
        assert span.get_span_context().trace_flags.sampled
        t.registry.histogram(REPO_QUERY_DURATION).labels("main", "SELECT").observe(3)
        t.recorders.runs.record("build", is_ci=False, status=1, duration_ms=10)
    request = flush_one(t, receiver)
    for name in (REPO_QUERY_DURATION, RUNS_DURATION):
        [point] = histogram_points(request, name).values()
        assert point.count == 1 and not point.exemplars, name


# --- 3. the console exporter ------------------------------------------------------------------------------

def json_documents(text: str) -> list[Any]:
    decoder, out, i = json.JSONDecoder(), list[Any](), 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        doc, i = decoder.raw_decode(text, i)
        out.append(doc)


def test_console_exporter_prints_the_catalogue() -> None:
    out = io.StringIO()
    reader = PeriodicExportingMetricReader(ConsoleMetricExporter(out=out), export_interval_millis=HOUR_MS)
    t = telemetry.setup(registry=Registry(), serve=False, runtime_metrics=False, metric_readers=[reader])
    t.recorders.runs.record("build", is_ci=True, status=0, duration_ms=250)
    t.registry.counter(HTTP_REQUEST_COUNT).labels("GET", "example.test", 200).inc(2)
    assert t.meter_provider is not None and t.meter_provider.force_flush()
    text = t.scrape()
    [doc] = json_documents(out.getvalue())
    metrics = {m["name"]: m for rm in doc["resource_metrics"] for sm in rm["scope_metrics"]
               if sm["scope"]["name"] == SCOPE_NAME for m in sm["metrics"]}
    [runs] = metrics[RUNS_TOTAL]["data"]["data_points"]
    assert runs["attributes"] == {"name": "build", "is_ci": "true", "status": "0"} and runs["value"] == 1
    assert metrics[RUNS_TOTAL]["data"]["is_monotonic"] is True
    assert metrics[RUNS_TOTAL]["data"]["aggregation_temporality"] == AggregationTemporality.CUMULATIVE.value
    [duration] = metrics[RUNS_DURATION]["data"]["data_points"]
    assert (duration["count"], duration["sum"], duration["min"], duration["max"]) == (1, 250, 250, 250)
    assert duration["bucket_counts"][:3] == [0, 1, 0]
    [requests] = metrics[HTTP_REQUEST_COUNT]["data"]["data_points"]
    assert requests["attributes"] == {"method": "GET", "host": "example.test", "status": "200"}
    assert requests["value"] == 2
    # The console shows every catalogue family /metrics has a series for.
    prom = prometheus_view(text)
    assert set(metrics) == {n for n, series in prom.items() if series}


# --- 4. OTLP configured from the environment --------------------------------------------------------------

def test_otlp_from_the_environment_uses_the_stock_reader(receiver: OtlpReceiver,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    receiver.clear()
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", receiver.metrics_url)
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", str(HOUR_MS))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "gzip")
    memory = InMemoryMetricReader()
    t = telemetry.setup(registry=Registry(), serve=False, runtime_metrics=False, service_name="env-pushed",
                        metric_readers=[memory])
    assert t.meter_provider is not None
    readers = t.meter_provider._metric_readers  # the SDK has no public list of a provider's readers
    [periodic] = [r for r in readers if isinstance(r, PeriodicExportingMetricReader)]
    assert type(periodic) is PeriodicExportingMetricReader
    assert type(periodic._exporter) is OTLPMetricExporter
    t.recorders.runs.record("test", is_ci=False, status=1, duration_ms=1234.5)
    t.recorders.cache.event("miss")
    t.registry.gauge(BY_NAME["tuist_projects_total"].name).labels().set(12)
    request = flush_one(t, receiver)
    [received] = [r for r in receiver.received if r.request is not None]
    assert received.headers.get("content-encoding") == "gzip"
    assert received.headers.get("content-type") == "application/x-protobuf"
    resource = resource_attributes(request)
    assert resource["service.name"] == "env-pushed"
    assert resource.get("service.instance.id"), resource
    pushed = otlp_view(request)
    assert pushed == memory_view(memory.get_metrics_data())
    assert pushed[RUNS_TOTAL][1][labels_key(RUNS_TOTAL, "test", "false", "1")][0] == 1
    count, total, counts, *_ = pushed[RUNS_DURATION][1][labels_key(RUNS_DURATION, "test", "false", "1")]
    assert (count, total, counts[:4]) == (1, 1234.5, (0, 0, 0, 1))
    events = {k: v[0] for k, v in pushed["tuist_cache_events_total"][1].items()}
    assert events == {(("event_type", "local_hit"),): 0, (("event_type", "miss"),): 1,
                      (("event_type", "remote_hit"),): 0}  # the recorder binds all three up front
    assert pushed["tuist_projects_total"] == (("gauge", None, None), {(): (12, 0)})
    assert_prometheus_shows(prometheus_view(t.scrape()), pushed)


# --- 5. a reader added later --------------------------------------------------------------------------------

def test_a_reader_added_later_sees_series_from_before_and_after() -> None:
    t = telemetry.setup(metrics_port=0, metrics_host="127.0.0.1", registry=Registry(), serve=True,
                        runtime_metrics=False)
    assert t.meter_provider is not None and t.metrics_url is not None
    runs, duration = t.registry.counter(RUNS_TOTAL), t.registry.histogram(RUNS_DURATION)
    size = storage_names("get_object_size").size
    assert size is not None
    runs.labels("before", True, 0).inc(2)
    runs.labels("untouched", False, 1).inc(7)
    duration.labels("before", True, 0).observe(10)
    t.registry.histogram(size).labels("key-1").observe(2048)
    t.registry.gauge("tuist_repo_pool_ready_conn_count").labels("main").set(4)

    late = InMemoryMetricReader()
    t.meter_provider.add_metric_reader(late)
    runs.labels("before", True, 0).inc()
    runs.labels("after", False, 0).inc(5)
    duration.labels("before", True, 0).observe(20)
    duration.labels("after", False, 0).observe(600)
    t.registry.gauge("tuist_repo_pool_ready_conn_count").labels("main").set(9)

    seen = memory_view(late.get_metrics_data())
    text = fetch(t.metrics_url)
    points = seen[RUNS_TOTAL][1]
    assert {k: v[0] for k, v in points.items()} == {labels_key(RUNS_TOTAL, "before", "true", "0"): 3,
                                                    labels_key(RUNS_TOTAL, "untouched", "false", "1"): 7,
                                                    labels_key(RUNS_TOTAL, "after", "false", "0"): 5}
    hist = seen[RUNS_DURATION][1]
    assert hist[labels_key(RUNS_DURATION, "before", "true", "0")][:2] == (2, 30)
    assert hist[labels_key(RUNS_DURATION, "after", "false", "0")][:2] == (1, 600)
    assert seen[size][1][labels_key(size, "key-1")][:2] == (1, 2048)
    assert seen["tuist_repo_pool_ready_conn_count"][1] == {(("pool", "main"),): (9, 0)}
    assert_prometheus_shows(prometheus_view(text), seen)


# --- 6. delta temporality ---------------------------------------------------------------------------------

DELTA: dict[type, AggregationTemporality] = {Counter: AggregationTemporality.DELTA,
                                             Histogram: AggregationTemporality.DELTA}


def _delta_setup() -> tuple[telemetry.Telemetry, InMemoryMetricReader, InMemoryMetricReader]:
    delta, cumulative = InMemoryMetricReader(preferred_temporality=DELTA), InMemoryMetricReader()
    t = telemetry.setup(registry=Registry(), serve=False, runtime_metrics=False, metric_readers=[delta, cumulative])
    return t, delta, cumulative


def _points(data: MetricsData | None, name: str) -> tuple[Any, list[Any]]:
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if sm.scope.name == SCOPE_NAME and m.name == name:
                    return m.data, list(m.data.data_points)
    return None, []


def test_delta_reader_sees_the_differences_between_collections() -> None:
    t, delta, cumulative = _delta_setup()
    runs = t.registry.counter(RUNS_TOTAL).labels("build", True, 0)
    duration = t.registry.histogram(RUNS_DURATION).labels("build", True, 0)

    runs.inc(3)
    duration.observe(600)
    duration.observe(50)
    first = delta.get_metrics_data()
    data, [c1] = _points(first, RUNS_TOTAL)
    assert isinstance(data, Sum) and data.is_monotonic
    assert data.aggregation_temporality is AggregationTemporality.DELTA and c1.value == 3
    data, [h1] = _points(first, RUNS_DURATION)
    assert isinstance(data, HistogramData) and data.aggregation_temporality is AggregationTemporality.DELTA
    assert (h1.count, h1.sum, list(h1.bucket_counts)[:4]) == (2, 650, [1, 0, 1, 0])

    runs.inc(2)
    duration.observe(7000)
    second = delta.get_metrics_data()
    [c2] = _points(second, RUNS_TOTAL)[1]
    [h2] = _points(second, RUNS_DURATION)[1]
    assert c2.value == 2
    assert (h2.count, h2.sum, list(h2.bucket_counts)[:7]) == (1, 7000, [0, 0, 0, 0, 0, 1, 0])
    # Contiguous intervals: each delta starts where the previous one ended.
    assert c2.start_time_unix_nano == c1.time_unix_nano and h2.start_time_unix_nano == h1.time_unix_nano
    assert c1.start_time_unix_nano < c1.time_unix_nano

    # The cumulative reader beside it, and /metrics, still see the totals.
    [c_total] = _points(cumulative.get_metrics_data(), RUNS_TOTAL)[1]
    [h_total] = _points(cumulative.get_metrics_data(), RUNS_DURATION)[1]
    assert c_total.value == 5 and (h_total.count, h_total.sum) == (3, 7650)
    prom = prometheus_view(t.scrape())
    assert prom[RUNS_TOTAL] == {labels_key(RUNS_TOTAL, "build", "true", "0"): 5}
    assert prom[RUNS_DURATION][labels_key(RUNS_DURATION, "build", "true", "0")][:2] == (3, 7650)


def test_delta_histogram_min_and_max_are_the_intervals() -> None:
    t, delta, _ = _delta_setup()
    duration = t.registry.histogram(RUNS_DURATION).labels("build", True, 0)
    duration.observe(600)
    delta.get_metrics_data()
    duration.observe(50)
    [point] = _points(delta.get_metrics_data(), RUNS_DURATION)[1]
    assert (point.count, point.min, point.max) == (1, 50, 50)  # the plain SDK's: the interval's only value


def test_delta_interval_without_measurements_exports_no_point() -> None:
    t, delta, _ = _delta_setup()
    t.registry.counter(RUNS_TOTAL).labels("build", True, 0).inc(3)
    t.registry.histogram(RUNS_DURATION).labels("build", True, 0).observe(600)
    delta.get_metrics_data()
    data = delta.get_metrics_data()  # None: nothing at all to report, as the SDK does
    assert data is None or (_points(data, RUNS_TOTAL)[1] == [] and _points(data, RUNS_DURATION)[1] == [])


def test_the_receiver_answers_503_or_not_at_all() -> None:
    """The receiver's other modes, for shutdown and retry tests: recorded either way."""
    from opentelemetry.sdk.metrics.export import MetricExportResult

    for mode, timeout in (("unavailable", 1.5), ("hang", 0.5)):
        with OtlpReceiver(mode=mode) as rx:  # type: ignore[arg-type]
            exporter = OTLPMetricExporter(endpoint=rx.metrics_url, timeout=timeout)
            memory = InMemoryMetricReader()
            t = telemetry.setup(registry=Registry(), serve=False, runtime_metrics=False, metric_readers=[memory])
            t.recorders.runs.record("build", is_ci=False, status=0, duration_ms=1)
            data = memory.get_metrics_data()
            assert data is not None
            started = time.monotonic()
            result = exporter.export(data, timeout_millis=timeout * 1000)
            elapsed = time.monotonic() - started
            exporter.shutdown()
            telemetry.shutdown()
            assert result is MetricExportResult.FAILURE, mode
            received = rx.wait_for(1)
            assert RUNS_TOTAL in metrics_by_name(received[0], SCOPE_NAME)
            if mode == "hang":
                assert rx.received[0].status is None and elapsed < timeout + 5
            else:
                assert rx.received[0].status == 503
