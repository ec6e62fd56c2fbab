"""The renderer and our MetricReader: exact names and types, number formatting, escaping, and the standard
OpenTelemetry naming for the SDK's own metrics, checked against the stock exporter."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from telemetry.catalogue import CATALOGUE, spec
from telemetry.exposition.reader import PrometheusReader
from telemetry.exposition.render import CONTENT_TYPE, escape_help, format_float, otel_name, render
from telemetry.registry import Registry


def samples(text: str) -> dict[str, str]:
    """``name{labels}`` -> value, for every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = value
    return out


def types(text: str) -> dict[str, str]:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


@pytest.mark.parametrize("value", [0.0, 1.0, 0.5, 2.5e-7, 123456.0, 1234567.0, 1e7, 1795303115.999836, 1e16,
                                   12345678.9, float("inf"), float("-inf"), -3.25, 1e-5])
def test_format_float_matches_prometheus_client(value: float) -> None:
    assert format_float(value) == floatToGoString(value)


@pytest.mark.parametrize(("value", "go"), [(1e10, "1e+10"), (12345678901.5, "1.23456789015e+10"),
                                         (2.5e9, "2.5e+09"), (1e15, "1e+15")])
def test_format_float_large_exponents_as_go_writes_them(value: float, go: str) -> None:
    """prometheus_client writes 1e+010 here (a bug both parsers tolerate); Go's strconv writes 1e+10."""
    assert format_float(value) == go


def test_format_float_ints_and_nan() -> None:
    assert format_float(3) == "3" and format_float(10**12) == "1000000000000"
    assert format_float(float("nan")) == "NaN"


def test_content_type_is_text_format_0_0_4() -> None:
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_catalogue_families_keep_their_exact_names_and_documented_types(registry: Registry) -> None:
    registry.counter("tuist_http_request_count").labels("GET", "api.github.com", "200").inc(2)
    registry.counter("tuist_cache_uploaded_bytes").labels().inc(1_024)
    registry.gauge("tuist_projects_total").labels().set(12)
    registry.histogram("tuist_http_request_duration_nanosecond").labels("GET", "api.github.com", "200").observe(
        3e6)
    text = render(registry, None)
    assert types(text) == {s.name: s.kind.value for s in CATALOGUE}
    got = samples(text)
    assert got['tuist_http_request_count{method="GET",host="api.github.com",status="200"}'] == "2"
    assert got["tuist_cache_uploaded_bytes"] == "1024"
    assert got["tuist_projects_total"] == "12"
    prefix = 'tuist_http_request_duration_nanosecond_bucket{method="GET",host="api.github.com",status="200",'
    assert got[prefix + 'le="2.5e+06"}'] == "0"
    assert got[prefix + 'le="5e+06"}'] == "1"
    assert got[prefix + 'le="+Inf"}'] == "1"
    assert got['tuist_http_request_duration_nanosecond_sum{method="GET",host="api.github.com",status="200"}'] == \
        "3e+06"
    assert got['tuist_http_request_duration_nanosecond_count{method="GET",host="api.github.com",status="200"}'] == "1"
    # No _total, no unit suffix, no bucket le that is not in the catalogue.
    assert "tuist_http_request_count_total" not in text and "tuist_cache_uploaded_bytes_total" not in text
    les = re.findall(r'tuist_http_request_duration_nanosecond_bucket\{.*le="([^"]+)"\}', text)
    assert les == [format_float(float(b)) for b in spec("tuist_http_request_duration_nanosecond").buckets] + ["+Inf"]


def test_histogram_buckets_are_cumulative_and_end_with_count(registry: Registry) -> None:
    h = registry.histogram("tuist_runs_duration_milliseconds").labels("build", "true", "0")
    for v in (50, 100, 300, 700, 10**7):
        h.observe(v)
    got = samples(render(registry, None))
    key = 'tuist_runs_duration_milliseconds_bucket{name="build",is_ci="true",status="0",le="%s"}'
    assert [got[key % le] for le in ("100.0", "500.0", "1000.0", "3.6e+06", "+Inf")] == ["2", "3", "4", "4", "5"]
    assert got['tuist_runs_duration_milliseconds_count{name="build",is_ci="true",status="0"}'] == "5"
    assert got['tuist_runs_duration_milliseconds_sum{name="build",is_ci="true",status="0"}'] == "10001150"


def test_help_and_label_escaping(registry: Registry) -> None:
    assert escape_help("a\\b\nc \"q\"") == 'a\\\\b\\nc "q"'
    registry.counter("tuist_storage_get_object_as_string_count").labels('a"b\\c\nd ü').inc()
    text = render(registry, None)
    assert 'tuist_storage_get_object_as_string_count{object_key="a\\"b\\\\c\\nd ü"} 1\n' in text
    [family] = [f for f in text_string_to_metric_families(text)
                if f.name.startswith("tuist_storage_get_object_as_string_count")]
    assert family.samples[0].labels == {"object_key": 'a"b\\c\nd ü'}


def test_render_nothing() -> None:
    assert render(None, None) == ""


OTEL_INSTRUMENTS = [
    ("http.client.duration", "ms", "histogram"), ("process.cpu.time", "s", "counter"),
    ("process.thread.count", "{thread}", "updown"), ("db.client.connections.usage", "{connection}", "updown"),
    ("x.ratio", "1", "gauge"), ("x.rate", "By/s", "counter"), ("requests_total", "", "counter"),
    ("weird-name.with/slash", "", "counter"), ("size", "By", "histogram"), ("mem", "MiBy", "gauge"),
    ("lat", "us", "counter"), ("c.count", "1", "counter"), ("t", "ms", "gauge"), ("foo_seconds", "s", "counter"),
    ("q", "ms/min", "counter"), ("up.down", "By", "updown"),
]


@pytest.fixture
def both_readers() -> Iterator[tuple[PrometheusReader, CollectorRegistry, MeterProvider]]:
    """Our reader and the stock OpenTelemetry Prometheus reader on one provider (stock one on a private
    prometheus_client registry, so nothing global is left behind)."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    stock = PrometheusMetricReader(disable_target_info=True)
    REGISTRY.unregister(stock._collector)
    private = CollectorRegistry()
    private.register(stock._collector)
    ours = PrometheusReader(None, target_info=False)
    provider = MeterProvider(resource=Resource({"service.name": "t"}), metric_readers=[ours, stock],
                             shutdown_on_exit=False)
    yield ours, private, provider
    REGISTRY.register(stock._collector)  # the stock reader unregisters itself from the global one on shutdown
    provider.shutdown()


def test_sdk_metrics_get_the_stock_exporters_names_types_and_values(
        both_readers: tuple[PrometheusReader, CollectorRegistry, MeterProvider]) -> None:
    ours, stock_registry, provider = both_readers
    meter = provider.get_meter("x")
    for name, unit, kind in OTEL_INSTRUMENTS:
        attrs = {"a.b": "x", "n": 1}
        if kind == "histogram":
            h = meter.create_histogram(name, unit=unit)
            h.record(3, attrs)
            h.record(70, attrs)
        elif kind == "counter":
            meter.create_counter(name, unit=unit).add(2, attrs)
        elif kind == "updown":
            meter.create_up_down_counter(name, unit=unit).add(-2, attrs)
        else:
            meter.create_gauge(name, unit=unit).set(2.5, attrs)
    text = ours.scrape()
    stock = generate_latest(stock_registry).decode()
    assert types(text) == types(stock)
    assert len(types(text)) == len(OTEL_INSTRUMENTS)

    def values(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        out = {}
        for family in text_string_to_metric_families(exposition):
            for s in family.samples:
                labels = tuple(sorted((k, v) for k, v in s.labels.items() if not k.startswith("otel_scope_")))
                out[(s.name, labels)] = s.value
        return out

    assert values(text) == values(stock)
    assert "otel_scope_name" not in text, "scope labels are off by default"


@pytest.mark.parametrize(("name", "unit", "counter", "gauge", "expected"), [
    ("http.client.duration", "ms", False, False, "http_client_duration_milliseconds"),
    ("process.cpu.time", "s", True, False, "process_cpu_time_seconds_total"),
    ("jobs_total", "", True, False, "jobs_total"),
    ("cpython.gc.collections", "{collection}", True, False, "cpython_gc_collections_total"),
    ("load", "1", False, True, "load_ratio"), ("ratio", "1", False, True, "ratio"),
    ("x_bytes", "By", False, True, "x_bytes"),
])
def test_otel_name(name: str, unit: str, counter: bool, gauge: bool, expected: str) -> None:
    assert otel_name(name, unit, counter=counter, gauge=gauge) == expected


def test_each_series_has_its_own_labels_and_colliding_keys_are_joined() -> None:
    ours = PrometheusReader(None, target_info=False)
    provider = MeterProvider(metric_readers=[ours], shutdown_on_exit=False)
    try:
        c = provider.get_meter("x").create_counter("c")
        c.add(1, {"a.b": "x", "a_b": "y"})
        c.add(1, {"k": "only"})
        c.add(1, {"list": ["p", 'q"'], "flag": True})
        text = ours.scrape()
    finally:
        provider.shutdown()
    got = samples(text)
    assert got == {'c_total{a_b="x;y"}': "1", 'c_total{k="only"}': "1",
                   'c_total{list="[\\"p\\", \\"q\\\\\\"\\"]",flag="true"}': "1"}
    [family] = list(text_string_to_metric_families(text))
    assert {tuple(s.labels) for s in family.samples} == {("a_b",), ("k",), ("list", "flag")}


def test_reader_target_info_and_scope_labels() -> None:
    registry = Registry()
    reader = PrometheusReader(registry, target_info=True, scope_labels=True)
    provider = MeterProvider(resource=Resource({"service.name": "svc", "service.version": "2"}),
                             metric_readers=[reader], shutdown_on_exit=False)
    try:
        provider.get_meter("my.scope", "1.0").create_counter("jobs").add(1)
        text = reader.scrape()
    finally:
        provider.shutdown()
    assert 'target_info{service_name="svc",service_version="2"} 1\n' in text
    assert 'jobs_total{otel_scope_name="my.scope",otel_scope_version="1.0"} 1\n' in text
    # The catalogue comes first and never carries scope labels.
    assert text.index("# TYPE tuist_runs_total") < text.index("# TYPE target_info")
    assert not re.search(r"^tuist_.*otel_scope", text, re.M)


def test_reader_without_provider_renders_the_registry_and_runs_gauge_callbacks(registry: Registry) -> None:
    registry.gauge("tuist_repo_pool_ready_conn_count").add_callback(lambda: [(("main",), 3)])
    reader = PrometheusReader(registry)
    text = reader.scrape()
    assert 'tuist_repo_pool_ready_conn_count{pool="main"} 3\n' in text
    assert "target_info" not in text  # no provider, no resource
