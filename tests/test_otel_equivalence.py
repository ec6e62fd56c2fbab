"""What any OpenTelemetry reader on the package's MeterProvider collects for the catalogue equals what the
plain OpenTelemetry SDK records for the same measurements: same metric names, units, descriptions, types,
temporality, attributes and point values (sums, counts, bucket counts, bounds, min, max). And the numbers on
/metrics are those same values."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

from telemetry.bridge import CatalogueMeterProvider
from telemetry.catalogue import CATALOGUE, OVERFLOW_METRIC, SCOPE_NAME, Kind, MetricSpec
from telemetry.exposition.render import format_float, label_inner, render
from telemetry.registry import Registry

SPECS = [s for s in CATALOGUE if s.name != OVERFLOW_METRIC]
Op = tuple[MetricSpec, tuple[str, ...], float]


def label_values(s: MetricSpec, pick: int) -> tuple[str, ...]:
    out = []
    for i, name in enumerate(s.labels):
        allowed = sorted(s.allowed.get(name, ()))
        out.append(allowed[(pick + i) % len(allowed)] if allowed else f"{name}-{(pick + i) % 3}")
    return tuple(out)


def values_for(s: MetricSpec) -> st.SearchStrategy[float]:
    """Values a family accepts: any finite gauge value, counters and histograms >= 0 (bucket bounds included)."""
    if s.kind is Kind.GAUGE:
        return st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6, allow_nan=False))
    if s.kind is Kind.COUNTER:
        return st.one_of(st.integers(0, 10**6), st.floats(0, 1e6, allow_nan=False))
    bounds = s.buckets
    return st.one_of(st.sampled_from((0, *bounds)), st.floats(0, bounds[-1] * 2, allow_nan=False),
                     st.integers(0, int(bounds[-1]) * 2))


@st.composite
def operations(draw: st.DrawFn) -> list[Op]:
    ops: list[Op] = []
    for _ in range(draw(st.integers(1, 60))):
        s = draw(st.sampled_from(SPECS))
        labels = label_values(s, draw(st.integers(0, 5)))
        value = draw(values_for(s))
        ops.append((s, labels, value))
    return ops


def record_registry(ops: list[Op], registry: Registry) -> Registry:
    for s, labels, value in ops:
        if s.kind is Kind.COUNTER:
            registry.counter(s.name).labels(*labels).inc(value)
        elif s.kind is Kind.GAUGE:
            registry.gauge(s.name).labels(*labels).set(value)
        else:
            registry.histogram(s.name).labels(*labels).observe(value)
    return registry


def record_sdk(ops: list[Op]) -> MetricsData:
    """The plain OpenTelemetry SDK path: instruments named as the catalogue, bucket bounds through views."""
    reader = InMemoryMetricReader()
    views = [View(instrument_name=s.name, aggregation=ExplicitBucketHistogramAggregation(s.buckets))
             for s in SPECS if s.kind is Kind.HISTOGRAM]
    provider = MeterProvider(metric_readers=[reader], views=views, shutdown_on_exit=False)
    meter = provider.get_meter(SCOPE_NAME)
    instruments: dict[str, Any] = {}
    for s in SPECS:
        make = {Kind.COUNTER: meter.create_counter, Kind.GAUGE: meter.create_gauge,
                Kind.HISTOGRAM: meter.create_histogram}[s.kind]
        instruments[s.name] = make(s.name, unit=s.unit, description=s.help)
    for s, labels, value in ops:
        attrs = dict(zip(s.labels, labels, strict=True))
        instrument = instruments[s.name]
        if s.kind is Kind.COUNTER:
            instrument.add(value, attrs)
        elif s.kind is Kind.GAUGE:
            instrument.set(value, attrs)
        else:
            instrument.record(value, attrs)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    return data


def metrics_of(data: MetricsData) -> dict[str, Metric]:
    return {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


def points(metric: Metric) -> dict[tuple[tuple[str, Any], ...], Any]:
    return {tuple(sorted(p.attributes.items())): p for p in metric.data.data_points}


def assert_equivalent(ours: Metric, sdk: Metric) -> None:
    assert (ours.name, ours.unit, ours.description) == (sdk.name, sdk.unit, sdk.description)
    assert type(ours.data) is type(sdk.data)
    if isinstance(sdk.data, Sum):
        assert isinstance(ours.data, Sum)
        assert (ours.data.is_monotonic, ours.data.aggregation_temporality) == \
            (sdk.data.is_monotonic, sdk.data.aggregation_temporality)
    if isinstance(sdk.data, Histogram):
        assert isinstance(ours.data, Histogram)
        assert ours.data.aggregation_temporality == sdk.data.aggregation_temporality
    mine, theirs = points(ours), points(sdk)
    assert mine.keys() == theirs.keys()
    for key, expected in theirs.items():
        got = mine[key]
        if isinstance(expected, HistogramDataPoint):
            assert (got.count, list(got.bucket_counts), list(got.explicit_bounds), got.min, got.max) == \
                (expected.count, list(expected.bucket_counts), list(expected.explicit_bounds), expected.min,
                 expected.max), key
            assert got.sum == expected.sum or abs(got.sum - expected.sum) <= 1e-9 * abs(expected.sum), key
        else:
            assert got.value == expected.value or abs(got.value - expected.value) <= 1e-9 * abs(expected.value), key
        assert (got.start_time_unix_nano is None) == (expected.start_time_unix_nano is None)


def record_ours(ops: list[Op]) -> tuple[Registry, MetricsData]:
    """The package's path: the registry's handles, collected by a stock reader on the catalogue's provider."""
    registry = Registry()
    reader = InMemoryMetricReader()
    provider = CatalogueMeterProvider.build(registry, [reader], shutdown_on_exit=False)
    record_registry(ops, registry)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    return registry, data


def compare(ops: list[Op]) -> tuple[Registry, dict[str, Metric]]:
    registry, data = record_ours(ops)
    ours = metrics_of(data)
    sdk = metrics_of(record_sdk(ops))
    for name, metric in sdk.items():
        assert_equivalent(ours[name], metric)
    # The only extras: label-less counters, which exist from zero as in prometheus_client.
    for name in ours.keys() - sdk.keys():
        [(key, point)] = points(ours[name]).items()
        assert key == () and point.value == 0 and isinstance(ours[name].data, Sum), name
    return registry, sdk


@settings(max_examples=40, deadline=None)
@given(ops=operations())
def test_registry_equals_the_sdk_for_the_same_measurements(ops: list[Op]) -> None:
    compare(ops)


def test_every_catalogue_family_at_once_and_the_numbers_on_metrics() -> None:
    ops: list[Op] = []
    for s in SPECS:
        for pick in range(3):
            labels = label_values(s, pick)
            if s.kind is Kind.HISTOGRAM:
                ops += [(s, labels, b) for b in (0, s.buckets[0], s.buckets[-1] * 1.5, s.buckets[3] + 0.5)]
            elif s.kind is Kind.GAUGE:
                ops += [(s, labels, 5), (s, labels, -2.5 * (pick + 1))]
            else:
                ops += [(s, labels, 1), (s, labels, 2.5 * pick)]
    registry, sdk = compare(ops)
    assert len(sdk) == len(SPECS)
    # /metrics shows the SDK's values for every point: sample by sample, under the catalogue names.
    lines = set(render(registry, None).splitlines())
    checked = 0
    for name, metric in sdk.items():
        s = next(x for x in SPECS if x.name == name)
        for point in metric.data.data_points:
            inner = label_inner(s.labels, [point.attributes[n] for n in s.labels])
            labels = "{" + inner[:-1] + "}" if inner else ""
            if isinstance(point, HistogramDataPoint):
                cumulative = 0
                for bound, n in zip([*point.explicit_bounds, float("inf")], point.bucket_counts, strict=True):
                    cumulative += n
                    assert f'{name}_bucket{{{inner}le="{format_float(float(bound))}"}} {cumulative}' in lines
                assert f"{name}_count{labels} {point.count}" in lines
                assert f"{name}_sum{labels} {format_float(point.sum)}" in lines
            else:
                assert f"{name}{labels} {format_float(point.value)}" in lines
            checked += 1
    assert checked > 100
