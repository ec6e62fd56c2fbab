"""OpenTelemetry Views over the catalogue, and ``TUIST_METRICS_DROP_LABELS``, with real components: ``setup()``
serving /metrics on loopback, an ``InMemoryMetricReader`` on the same MeterProvider, ``promtool check metrics``
on every scrape and a real Prometheus scraping the endpoint.

- A View that drops ``object_key`` merges the series of many objects into one; sums and counts stay exact.
- Rename, new buckets and ``DropAggregation`` show on /metrics and in the in-memory reader alike.
- A View that cannot apply is a ``ValueError`` at ``setup()``, naming the metric.
- A documented name recorded through the OpenTelemetry API adds into the same series, under one family.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import (
    DropAggregation,
    ExplicitBucketHistogramAggregation,
    LastValueAggregation,
    SumAggregation,
    View,
)

import telemetry
from telemetry.catalogue import BY_NAME, CATALOGUE, Kind, storage_names
from telemetry.config import ENV, SettingsError
from telemetry.registry import Registry
from telemetry.setup import Telemetry, drop_label_views
from telemetry.testing import parse_exposition, sample_total, wait_for

from .test_golden import fill
from .test_prometheus import NOT_YET, TARGET_LABELS, api, prometheus_scraping
from .test_promtool import promtool

pytestmark = pytest.mark.usefixtures("clean_setup")

KEYS = 240  # distinct object keys recorded per storage operation
UPLOADS = 3  # distinct upload ids among them
CHECK = storage_names("check_object_existence")
SIZE = storage_names("get_object_size")
COMPLETE = storage_names("multipart_complete_upload")
PART = storage_names("multipart_generate_upload_part_presigned_url")
DELETE = storage_names("delete_all_objects")
PER_OBJECT = ("object_key", "upload_id", "part_number")
assert SIZE.size is not None
SIZE_BYTES: str = SIZE.size


# --- helpers -----------------------------------------------------------------------------------------------

@contextlib.contextmanager
def running(views: Sequence[View] = (), registry: Registry | None = None,
            **settings: Any) -> Iterator[tuple[Telemetry, InMemoryMetricReader]]:
    """``setup()`` on a loopback port with an in-memory reader beside ours; shut down afterwards."""
    memory = InMemoryMetricReader()
    t = telemetry.setup(registry=registry or Registry(), metrics_port=0, metrics_host="127.0.0.1",
                        set_global=False, metric_readers=[memory], views=list(views), **settings)
    try:
        yield t, memory
    finally:
        telemetry.shutdown()


def scrape(t: Telemetry) -> str:
    """One GET of the real endpoint (the reader's own scrape when set up with ``serve=False``)."""
    if t.server is None:
        return t.scrape()
    assert t.metrics_url
    with urllib.request.urlopen(t.metrics_url, timeout=10) as response:
        assert response.status == 200
        return str(response.read().decode())


def assert_valid(text: str) -> None:
    """promtool parses it (exit 3 is its naming lints on the doc's spellings, expected)."""
    result = promtool(text)
    assert "error while linting" not in result.stderr, result.stderr
    assert result.returncode in (0, 3), result.stdout + result.stderr
    assert_one_family_per_name(text)


def assert_one_family_per_name(text: str) -> None:
    """One ``# HELP`` and one ``# TYPE`` per family, and every sample name belongs to one family only."""
    helps, types, owners = Counter[str](), Counter[str](), dict[str, str]()
    family, kind = "", ""
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helps[line.split(" ")[2]] += 1
        elif line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ")
            types[family] += 1
        elif line and not line.startswith("#"):
            sample = line.split("{", 1)[0].split(" ", 1)[0]
            allowed = {family} | ({f"{family}{s}" for s in ("_bucket", "_sum", "_count")}
                                  if kind == "histogram" else set())
            assert sample in allowed, f"{sample} is outside its family {family} ({kind})"
            assert owners.setdefault(sample, family) == family, f"{sample} is in {owners[sample]} and {family}"
    assert all(n == 1 for n in helps.values()), [n for n, c in helps.items() if c > 1]
    assert all(n == 1 for n in types.values()), [n for n, c in types.items() if c > 1]
    # A family's sample names must not be another family's name either (Prometheus's parser folds them).
    assert not {s for s, f in owners.items() if s != f} & set(types)


def metrics_of(memory: InMemoryMetricReader) -> list[tuple[str, Any]]:
    """(scope, metric) of everything the in-memory reader collects now."""
    data = memory.get_metrics_data()
    if data is None:
        return []
    return [(sm.scope.name, m) for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]


def points(memory: InMemoryMetricReader, name: str) -> list[Any]:
    return [p for _, m in metrics_of(memory) if m.name == name for p in m.data.data_points]


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(dict(s.labels), s.value) for s in parse_exposition(text) if s.name == name]


def catalogue_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, dict(s.labels), s.value) for s in parse_exposition(text) if s.name.startswith("tuist_")]


def record_storage(t: Telemetry) -> int:
    """KEYS distinct objects through four storage operations; returns the sum of the recorded sizes."""
    storage = t.recorders.storage
    total_size = 0
    for i in range(KEYS):
        key = f"projects/acme/objects/{i:05d}"
        upload = f"upload-{i % UPLOADS}"
        with storage.operation("check_object_existence", object_key=key):
            pass
        with storage.operation("get_object_size", object_key=key) as op:
            op.size_bytes = 1000 + i
            total_size += 1000 + i
        with storage.operation("multipart_generate_upload_part_presigned_url", object_key=key,
                               part_number=i % 7 + 1, upload_id=upload):
            pass
        with storage.operation("multipart_complete_upload", object_key=key, upload_id=upload):
            pass
    for i in range(4):
        with storage.operation("delete_all_objects", project_slug=f"project-{i % 2}"):
            pass
    return total_size


def query(base: str, promql: str) -> list[dict[str, Any]]:
    return list(api(base, "/api/v1/query", query=promql)["result"])


# --- attribute_keys: series that differ only in object_key merge --------------------------------------------

def test_dropping_object_key_from_every_storage_metric_merges_their_series() -> None:
    with running([View(instrument_name="tuist_storage_*", attribute_keys=set())]) as (t, memory):
        total_size = record_storage(t)
        text = scrape(t)
        assert_valid(text)
        assert "object_key" not in text and "upload_id" not in text and "part_number" not in text
        for names in (CHECK, SIZE, COMPLETE, PART):
            assert samples(text, names.count) == [({}, KEYS)]
            assert samples(text, f"{names.duration}_count") == [({}, KEYS)]
            buckets = samples(text, f"{names.duration}_bucket")
            assert [labels["le"] for labels, _ in buckets][-1] == "+Inf" and buckets[-1][1] == KEYS
            assert len(buckets) == len(BY_NAME[names.duration].buckets) + 1
            assert all(set(labels) == {"le"} for labels, _ in buckets)
        assert samples(text, DELETE.count) == [({}, 4)]
        assert samples(text, f"{SIZE_BYTES}_sum") == [({}, total_size)]
        assert samples(text, f"{SIZE_BYTES}_count") == [({}, KEYS)]

        [count] = points(memory, CHECK.count)
        assert (dict(count.attributes), count.value) == ({}, KEYS)
        [size] = points(memory, SIZE_BYTES)
        assert (dict(size.attributes), size.count, size.sum, sum(size.bucket_counts)) == ({}, KEYS, total_size, KEYS)
        storage = [m for _, m in metrics_of(memory) if m.name.startswith("tuist_storage_")]
        recorded = {s.name for s in CATALOGUE if s.domain == "storage" and any(
            sample.name in s.sample_names for sample in parse_exposition(text))}
        assert {m.name for m in storage} == recorded and len(recorded) == 4 * 2 + 1 + 2
        assert all(not p.attributes for m in storage for p in m.data.data_points)


def test_a_view_on_one_instrument_by_its_opentelemetry_name_shapes_only_that_one() -> None:
    views = [View(instrument_name=BY_NAME[CHECK.count].instrument, attribute_keys={"project_slug"}),
             View(instrument_name=BY_NAME[COMPLETE.count].instrument, attribute_keys={"upload_id"})]
    with running(views) as (t, memory):
        record_storage(t)
        text = scrape(t)
        assert_valid(text)
        # project_slug is no label of the count: nothing is kept, every object merges into one series.
        assert samples(text, CHECK.count) == [({}, KEYS)]
        per_upload = {labels["upload_id"]: v for labels, v in samples(text, COMPLETE.count)}
        assert per_upload == {f"upload-{i}": KEYS // UPLOADS for i in range(UPLOADS)}
        assert all(set(labels) == {"upload_id"} for labels, _ in samples(text, COMPLETE.count))
        # The instruments no View selected keep one series per object.
        for name in (f"{CHECK.duration}_count", f"{COMPLETE.duration}_count", SIZE.count):
            assert len(samples(text, name)) == KEYS and sample_total(text, name) == KEYS

        [count] = points(memory, CHECK.count)
        assert (dict(count.attributes), count.value) == ({}, KEYS)
        assert {p.attributes["upload_id"]: p.value for p in points(memory, COMPLETE.count)} == per_upload
        assert len(points(memory, CHECK.duration)) == KEYS


@pytest.mark.slow
def test_prometheus_scrapes_the_merged_series_without_object_key(tmp_path: Path) -> None:
    with running([View(instrument_name="tuist_storage_*", attribute_keys=set())]) as (t, _):
        record_storage(t)
        assert t.metrics_url
        with prometheus_scraping(tmp_path, t.metrics_url) as prometheus:
            [series] = wait_for(lambda: query(prometheus, CHECK.count), 30, what="the merged count", interval=0.5,
                                ignore=NOT_YET)
            assert set(series["metric"]) == TARGET_LABELS and float(series["value"][1]) == KEYS
            [histogram] = query(prometheus, f"{SIZE.duration}_count")
            assert set(histogram["metric"]) == TARGET_LABELS and float(histogram["value"][1]) == KEYS
            assert query(prometheus, '{__name__=~"tuist_storage_.+", object_key!=""}') == []
            assert len(query(prometheus, f"{CHECK.duration}_bucket")) == len(BY_NAME[CHECK.duration].buckets) + 1
            [entry] = api(prometheus, "/api/v1/metadata", metric=CHECK.count)[CHECK.count]
            assert entry["type"] == "counter"


# --- rename, buckets, drop ---------------------------------------------------------------------------------

def record_runs(t: Telemetry, durations: Sequence[float] = (5, 10, 50, 100, 500, 5000)) -> None:
    for d in durations:
        t.recorders.runs.record("build", is_ci=True, status=0, duration_ms=d)
    t.recorders.runs.record("test", is_ci=False, status=1, duration_ms=20)


def test_rename_shows_on_metrics_and_in_memory_reader_and_the_api_records_into_it() -> None:
    with running([View(instrument_name="tuist.runs", name="my_runs")]) as (t, memory):
        record_runs(t)
        attributes: dict[str, Any] = {"name": "build", "is_ci": True, "status": 0}
        t.meter_provider.instrument("tuist_runs_total").add(1, attributes)  # type: ignore[union-attr]
        t.meter_provider.get_meter("app").create_counter("tuist_runs_total").add(1, attributes)  # type: ignore[union-attr]
        text = scrape(t)
        assert_valid(text)
        assert text.count("# TYPE my_runs counter\n") == 1
        assert f"# HELP my_runs {BY_NAME['tuist_runs_total'].help}\n" in text
        assert "tuist_runs_total" not in text
        assert sample_total(text, "my_runs", name="build", is_ci="true", status="0") == 8
        assert sample_total(text, "my_runs", name="test", is_ci="false", status="1") == 1
        assert sample_total(text, "tuist_runs_duration_milliseconds_count") == 7  # the histogram is not renamed

        assert not points(memory, "tuist_runs_total")
        assert {(p.attributes["name"], p.value) for p in points(memory, "my_runs")} == {("build", 8), ("test", 1)}


def test_two_views_on_one_instrument_give_two_streams() -> None:
    views = [View(instrument_name="tuist.runs"),
             View(instrument_name="tuist.runs", name="tuist_runs_by_status_total", attribute_keys={"status"})]
    with running(views) as (t, memory):
        record_runs(t)
        text = scrape(t)
        assert_valid(text)
        assert sample_total(text, "tuist_runs_total") == 7 and len(samples(text, "tuist_runs_total")) == 2
        assert samples(text, "tuist_runs_by_status_total") == [({"status": "0"}, 6), ({"status": "1"}, 1)]
        assert sum(p.value for p in points(memory, "tuist_runs_total")) == 7
        assert {p.attributes["status"]: p.value for p in points(memory, "tuist_runs_by_status_total")} == {
            "0": 6, "1": 1}


def test_explicit_buckets_show_on_metrics_and_in_memory_reader() -> None:
    views = [View(instrument_name="tuist_runs_duration_milliseconds",
                  aggregation=ExplicitBucketHistogramAggregation((10, 100, 1000)))]
    with running(views) as (t, memory):
        record_runs(t)  # build: 5, 10, 50, 100, 500, 5000
        text = scrape(t)
        assert_valid(text)
        build = {"name": "build", "is_ci": "true", "status": "0"}
        buckets = [(labels["le"], v) for labels, v in samples(text, "tuist_runs_duration_milliseconds_bucket")
                   if build.items() <= labels.items()]
        assert buckets == [("10.0", 2), ("100.0", 4), ("1000.0", 5), ("+Inf", 6)]
        assert sample_total(text, "tuist_runs_duration_milliseconds_sum", **build) == 5665

        [point] = [p for p in points(memory, "tuist_runs_duration_milliseconds") if p.attributes["name"] == "build"]
        assert tuple(point.explicit_bounds) == (10, 100, 1000)
        assert tuple(point.bucket_counts) == (2, 2, 1, 1)
        assert (point.count, point.sum, point.min, point.max) == (6, 5665, 5, 5000)


def test_drop_aggregation_removes_the_metric_from_metrics_and_in_memory_reader() -> None:
    views = [View(instrument_name="tuist.cache.uploaded", aggregation=DropAggregation()),
             View(instrument_name=SIZE_BYTES, aggregation=DropAggregation())]
    with running(views) as (t, memory):
        t.recorders.cache.uploaded(4096)
        t.meter_provider.get_meter("app").create_counter("tuist_cache_uploaded_bytes").add(1)  # type: ignore[union-attr]
        record_storage(t)
        text = scrape(t)
        assert_valid(text)
        assert "tuist_cache_uploaded_bytes" not in text and SIZE_BYTES not in text
        assert sample_total(text, "tuist_cache_uploads_total") == 1 and sample_total(text, SIZE.count) == KEYS
        names = {m.name for _, m in metrics_of(memory)}
        assert "tuist_cache_uploaded_bytes" not in names and SIZE_BYTES not in names
        assert {"tuist_cache_uploads_total", SIZE.count} <= names


EVERY_LABEL = sorted({n for s in CATALOGUE for n in s.labels})


@pytest.mark.parametrize("views", [
    [],
    [View(instrument_name="tuist.runs", name="my_runs"),
     View(instrument_name="tuist.runs.duration", aggregation=ExplicitBucketHistogramAggregation((1, 2.5, 1e9))),
     View(instrument_name="tuist.cache.*", aggregation=DropAggregation()),
     View(instrument_name="tuist_storage_*", attribute_keys=set()),
     View(instrument_name="tuist_http_*", attribute_keys={"host"})],
    [View(instrument_name="tuist.runs"), View(instrument_name="tuist.runs", name="runs_by_ci_total",
                                              attribute_keys={"is_ci"})],
    [View(instrument_name="*", attribute_keys=set())],
    [View(instrument_name="tuist*", aggregation=DropAggregation())],
    [View(instrument_name="*", aggregation=DropAggregation())],
], ids=["none", "mixed", "two-streams", "no-labels-anywhere", "catalogue-dropped", "everything-dropped"])
def test_metrics_stay_valid_whatever_the_views_do(views: list[View]) -> None:
    with running(views) as (t, memory):
        fill(t.registry)
        record_runs(t)
        text = scrape(t)
        assert_valid(text)
        # The other reader collects the same streams: every catalogue stream it sees is a family on /metrics.
        streams = {s.name for s in t.registry.streams()}
        assert {m.name for _, m in metrics_of(memory) if m.name in streams} <= {
            line.split(" ")[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def test_metrics_stay_valid_with_every_catalogue_label_dropped() -> None:
    with running(drop_labels=",".join(EVERY_LABEL)) as (t, _):
        fill(t.registry)
        text = scrape(t)
        assert_valid(text)
        assert not [s.labels for s in parse_exposition(text)
                    if s.name.startswith("tuist_") and set(s.labels) - {"le", "otel_metric_overflow"}]


# --- Views that cannot apply ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("views", "match"), [
    ([View(instrument_name="tuist_runs_total", aggregation=ExplicitBucketHistogramAggregation((1, 2)))],
     r"tuist_runs_total: it is a counter and the View's ExplicitBucketHistogramAggregation does not fit"),
    ([View(instrument_name="tuist.runs.duration", aggregation=LastValueAggregation())],
     r"tuist_runs_duration_milliseconds: it is a histogram and the View's LastValueAggregation does not fit"),
    ([View(instrument_name="tuist_projects_total", aggregation=SumAggregation())],
     r"tuist_projects_total: it is a gauge and the View's SumAggregation does not fit"),
    ([View(instrument_name="tuist.runs", name="my-runs")], r"'my-runs' is not a valid Prometheus metric name"),
    ([View(instrument_name="tuist.runs", name="tuist.runs.renamed")], r"'tuist.runs.renamed' is not a valid"),
    ([View(instrument_name="tuist.runs", name="builds_total"),
      View(instrument_name="tuist.cache.uploads", name="builds_total")], r"named \['builds_total'\]"),
    ([View(instrument_name="tuist.runs", name="tuist_cache_uploads_total")], r"\['tuist_cache_uploads_total'\]"),
    ([View(instrument_name="tuist.cache.uploads", name="tuist_runs_duration_milliseconds")],
     r"\['tuist_runs_duration_milliseconds'\]"),
    ([View(instrument_name="tuist.runs.duration", aggregation=ExplicitBucketHistogramAggregation((5, 1)))],
     r"tuist_runs_duration_milliseconds needs finite, strictly increasing bucket boundaries"),
], ids=["buckets-on-counter", "last-value-on-histogram", "sum-on-gauge", "invalid-name", "dotted-name",
        "two-renames-one-name", "rename-onto-catalogue-counter", "rename-onto-catalogue-histogram",
        "decreasing-buckets"])
def test_a_view_that_cannot_apply_fails_setup(views: list[View], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        telemetry.setup(registry=Registry(), metrics_port=0, metrics_host="127.0.0.1", set_global=False,
                        views=views)
    assert telemetry.current() is None


@pytest.mark.parametrize("views", [
    [View(instrument_name="tuist.cache.uploads", name="tuist_runs_duration_milliseconds_count")],
    [View(instrument_name="tuist.runs.duration", name=CHECK.count.removesuffix("_count"))],
], ids=["counter-onto-histogram-sample", "histogram-whose-count-is-a-catalogue-counter"])
def test_a_rename_onto_another_metrics_sample_name_fails_setup(views: list[View]) -> None:
    try:
        with running(views) as (t, _):
            record_runs(t)
            t.recorders.cache.uploaded(1)
            with t.recorders.storage.operation("check_object_existence", object_key="k"):
                pass
            text = scrape(t)
    except ValueError:
        return
    result = promtool(text)
    raise AssertionError(f"setup() accepted {views}; promtool: {result.stderr.strip().splitlines()[0]}")


def test_views_after_data_was_recorded_name_the_family() -> None:
    registry = Registry()
    registry.counter("tuist_runs_total").labels("build", True, 0).inc()
    with pytest.raises(ValueError, match=r"Views change metrics that already recorded data: \['tuist_runs_total'\]"):
        telemetry.setup(registry=registry, serve=False, set_global=False,
                        views=[View(instrument_name="tuist.runs", name="my_runs")])
    assert telemetry.current() is None
    # A View on a family that has no data yet is fine, and the recorded series is still there.
    with running([View(instrument_name="tuist.cache.uploads", name="uploads_total")], registry=registry) as (t, _):
        text = scrape(t)
        assert sample_total(text, "tuist_runs_total") == 1 and samples(text, "uploads_total") == [({}, 0)]


def test_drop_labels_after_data_was_recorded_name_the_family() -> None:
    registry = Registry()
    registry.counter(CHECK.count).labels("projects/acme/objects/1").inc()
    with pytest.raises(ValueError, match=rf"already recorded data: \['{CHECK.count}'\]"):
        telemetry.setup(registry=registry, serve=False, set_global=False, drop_labels="object_key")
    assert telemetry.current() is None


# --- the OpenTelemetry API under documented names -----------------------------------------------------------

def test_api_recordings_under_a_documented_name_add_into_the_same_series() -> None:
    with running() as (t, memory):
        assert t.meter_provider is not None
        meter = t.meter_provider.get_meter("app")
        runs = meter.create_counter("tuist_runs_total")
        runs.add(2, {"name": "build", "is_ci": True, "status": 0})
        runs.add(1, {"name": "build", "is_ci": "true", "status": "0"})
        t.recorders.runs.record("build", is_ci=True, status=0, duration_ms=10)
        uploaded = meter.create_counter("tuist_cache_uploaded_bytes", unit="By")
        uploaded.add(4096)
        t.recorders.cache.uploaded(1024)
        with pytest.raises(ValueError, match=r"tuist_cache_uploaded_bytes: the catalogue defines "
                                             r"tuist_cache_uploaded_bytes as a counter; create_histogram\(\)"):
            meter.create_histogram("tuist_cache_uploaded_bytes")
        with pytest.raises(ValueError, match=r"tuist_runs: it would be exposed on /metrics as tuist_runs_total"):
            meter.create_counter("tuist_runs")
        with pytest.raises(ValueError, match=r"tuist_runs_total.*counter.*create_up_down_counter"):
            meter.create_up_down_counter("tuist_runs_total")

        text = scrape(t)
        assert_valid(text)
        assert text.count("# HELP tuist_runs_total ") == 1 and text.count("# TYPE tuist_runs_total ") == 1
        assert samples(text, "tuist_runs_total") == [({"name": "build", "is_ci": "true", "status": "0"}, 4)]
        assert samples(text, "tuist_cache_uploaded_bytes") == [({}, 5120)]
        assert text.count("# TYPE tuist_cache_uploaded_bytes counter\n") == 1

        collected = metrics_of(memory)
        assert [scope for scope, m in collected if m.name == "tuist_runs_total"] == ["tuist.telemetry"]
        assert [(dict(p.attributes), p.value) for p in points(memory, "tuist_runs_total")] == [
            ({"name": "build", "is_ci": "true", "status": "0"}, 4)]
        assert [p.value for p in points(memory, "tuist_cache_uploaded_bytes")] == [5120]


def test_histograms_of_another_scope_named_like_catalogue_samples_are_never_rendered_twice() -> None:
    histograms = [s for s in CATALOGUE if s.kind is Kind.HISTOGRAM]
    # Names whose histogram samples (X_bucket, X_sum, X_count) are catalogue names: X_count counters.
    counters = [s.name.removesuffix("_count") for s in CATALOGUE if s.name.endswith("_count")]
    wanted = [f"{s.name}{suffix}" for s in histograms for suffix in ("_bucket", "_sum", "_count")] + counters
    with running() as (t, _):
        assert t.meter_provider is not None
        record_runs(t)
        with t.recorders.storage.operation("check_object_existence", object_key="k"):
            pass
        before = scrape(t)
        meter = t.meter_provider.get_meter("app")
        refused, accepted = [], []
        for name in wanted:
            try:
                histogram = meter.create_histogram(name)
            except ValueError as exc:
                assert name in str(exc)
                refused.append(name)
                continue
            histogram.record(3.0, {"object_key": "k"})
            accepted.append(name)
        # Every one: a catalogue histogram's own sample names, and names whose histogram samples would be a
        # catalogue counter's (X for the counter X_count).
        assert accepted == [] and len(refused) == len(wanted) == 3 * len(histograms) + len(counters)
        text = scrape(t)
        assert_valid(text)
        for name in accepted:  # their samples are the catalogue's: never a second family under them
            assert f"# TYPE {name} " not in text and f"{name}_bucket" not in text
        # The catalogue's series are as they were: same samples, same values.
        assert catalogue_samples(text) == catalogue_samples(before)
        assert sample_total(text, CHECK.count) == 1
        assert sample_total(text, "tuist_runs_duration_milliseconds_count") == 7


@pytest.mark.parametrize("attributes", [
    {"name": "x"},
    {"name": "x", "is_ci": "maybe", "status": "0"},
    {"name": "x", "is_ci": True, "status": 2},
    {"name": "x", "is_ci": True, "status": 0, "extra": "y"},
    {},
], ids=["missing-labels", "is_ci-outside-allowed", "status-outside-allowed", "unknown-label", "no-labels"])
def test_bad_attributes_through_the_api_raise_and_record_nothing(attributes: dict[str, Any]) -> None:
    with running(serve=False) as (t, memory):
        assert t.meter_provider is not None
        meter = t.meter_provider.get_meter("app")
        recorders = [(meter.create_counter("tuist_runs_total").add, "tuist_runs_total"),
                     (t.meter_provider.instrument("tuist_runs_total").add, "tuist_runs_total"),
                     (meter.create_histogram("tuist_runs_duration_milliseconds").record,
                      "tuist_runs_duration_milliseconds"),
                     (t.meter_provider.instrument("tuist.runs.duration").record, "tuist_runs_duration_milliseconds")]
        for record, metric in recorders:
            with pytest.raises(ValueError, match=rf"^{metric}: .*label"):
                record(1, attributes)
        text = scrape(t)
        assert_valid(text)
        assert not samples(text, "tuist_runs_total") and not samples(text, "tuist_runs_duration_milliseconds_count")
        assert not points(memory, "tuist_runs_total") and not points(memory, "tuist_runs_duration_milliseconds")
        # The same instruments still record good attributes.
        for record, _ in recorders:
            record(1, {"name": "x", "is_ci": True, "status": 0})
        text = scrape(t)
        assert sample_total(text, "tuist_runs_total") == 2
        assert sample_total(text, "tuist_runs_duration_milliseconds_count") == 2


GLOBAL_API = textwrap.dedent("""
    import sys
    from opentelemetry import metrics
    import telemetry

    t = telemetry.setup(metrics_port=0, metrics_host="127.0.0.1", serve=False)
    meter = metrics.get_meter("app")
    meter.create_counter("tuist_runs_total").add(2, {"name": "build", "is_ci": True, "status": 0})
    t.recorders.runs.record("build", is_ci=True, status=0, duration_ms=10)
    meter.create_counter("tuist_cache_uploaded_bytes").add(100)
    for make, name in ((meter.create_histogram, "tuist_cache_uploaded_bytes"), (meter.create_counter, "tuist_runs")):
        try:
            make(name)
        except ValueError as exc:
            print("refused:", exc, file=sys.stderr)
    sys.stdout.write(t.scrape())
    telemetry.shutdown()
""")


def test_global_meter_provider_set_by_setup_records_documented_names_into_the_catalogue() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TUIST_"))}
    result = subprocess.run([sys.executable, "-c", GLOBAL_API], capture_output=True, text=True, timeout=60, env=env,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert_valid(text)
    assert samples(text, "tuist_runs_total") == [({"name": "build", "is_ci": "true", "status": "0"}, 3)]
    assert samples(text, "tuist_cache_uploaded_bytes") == [({}, 100)]
    refusals = [line for line in result.stderr.splitlines() if line.startswith("refused:")]
    assert len(refusals) == 2, result.stderr
    assert "tuist_cache_uploaded_bytes as a counter" in refusals[0] and "as tuist_runs_total" in refusals[1]


@pytest.mark.slow
def test_prometheus_types_api_recorded_documented_names_as_the_catalogue_does(tmp_path: Path) -> None:
    with running() as (t, _):
        assert t.meter_provider is not None and t.metrics_url
        meter = t.meter_provider.get_meter("app")
        meter.create_counter("tuist_runs_total").add(2, {"name": "build", "is_ci": True, "status": 0})
        t.recorders.runs.record("build", is_ci=True, status=0, duration_ms=10)
        meter.create_counter("tuist_cache_uploaded_bytes", unit="By").add(4096)
        with pytest.raises(ValueError):
            meter.create_histogram("tuist_cache_uploaded_bytes")
        with prometheus_scraping(tmp_path, t.metrics_url) as prometheus:
            def metadata() -> dict[str, Any] | None:
                data: dict[str, Any] = api(prometheus, "/api/v1/metadata")
                return data if {"tuist_runs_total", "tuist_cache_uploaded_bytes"} <= set(data) else None

            data = wait_for(metadata, 30, what="metadata", interval=0.5, ignore=NOT_YET)
            assert [e["type"] for e in data["tuist_runs_total"]] == ["counter"]
            assert [e["type"] for e in data["tuist_cache_uploaded_bytes"]] == ["counter"]
            [runs] = query(prometheus, "tuist_runs_total")
            assert float(runs["value"][1]) == 3
            [uploaded] = query(prometheus, "tuist_cache_uploaded_bytes")
            assert float(uploaded["value"][1]) == 4096
            assert not query(prometheus, '{__name__=~"tuist_cache_uploaded_bytes_(bucket|sum|count)"}')


# --- TUIST_METRICS_DROP_LABELS -------------------------------------------------------------------------------

def test_drop_labels_setting_merges_per_object_series(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV["drop_labels"], ",".join(PER_OBJECT))
    with running() as (t, memory):
        total_size = record_storage(t)
        text = scrape(t)
        assert_valid(text)
        assert not any(label in text for label in PER_OBJECT)
        for names in (CHECK, SIZE, COMPLETE, PART):
            assert samples(text, names.count) == [({}, KEYS)]
        assert samples(text, f"{SIZE_BYTES}_sum") == [({}, total_size)]
        # delete_all_objects keeps project_slug, which was not named.
        assert samples(text, DELETE.count) == [({"project_slug": "project-0"}, 2), ({"project_slug": "project-1"}, 2)]
        assert not [p for _, m in metrics_of(memory) for p in m.data.data_points if set(PER_OBJECT) & set(p.attributes)]
        [size] = points(memory, SIZE_BYTES)
        assert (size.count, size.sum) == (KEYS, total_size)


def test_drop_labels_setting_equals_the_documented_view_recipe() -> None:
    def shape(text: str) -> set[tuple[str, frozenset[tuple[str, str]]]]:
        return {(s.name, frozenset(s.labels.items())) for s in parse_exposition(text) if s.name.startswith("tuist_")}

    def counts(text: str) -> dict[str, float]:
        return {s.name: s.value for s in parse_exposition(text)
                if s.name.startswith("tuist_storage") and s.name.endswith("_count") and not s.labels}

    with running(drop_labels="object_key,upload_id,part_number") as (t, _):
        record_storage(t)
        by_setting = scrape(t)
    with running([View(instrument_name="tuist.storage.*", attribute_keys={"project_slug"})]) as (t, _):
        record_storage(t)
        by_view = scrape(t)
    assert shape(by_setting) == shape(by_view)
    assert counts(by_setting) == counts(by_view)
    assert set(counts(by_view)) == {n for names in (CHECK, SIZE, COMPLETE, PART)
                                    for n in (names.count, f"{names.duration}_count")} | {f"{SIZE_BYTES}_count"}


@pytest.mark.parametrize("label", EVERY_LABEL)
def test_drop_labels_reach_every_catalogue_metric_that_has_the_label(label: str) -> None:
    views = drop_label_views(label)
    assert len(views) == len([s for s in CATALOGUE if label in s.labels]) > 0
    with running(drop_labels=label, serve=False) as (t, _):
        for family in t.registry.families():
            [stream] = family.streams
            assert stream.name == family.spec.name
            assert stream.label_names == tuple(n for n in family.spec.labels if n != label), family.name


def test_drop_labels_also_apply_to_streams_a_user_view_shapes() -> None:
    views = [View(instrument_name=BY_NAME[COMPLETE.count].instrument, name="completed_uploads_total"),
             View(instrument_name=SIZE_BYTES, aggregation=DropAggregation())]
    with running(views, drop_labels="object_key") as (t, memory):
        record_storage(t)
        text = scrape(t)
        assert_valid(text)
        assert "object_key" not in text and COMPLETE.count not in text and SIZE_BYTES not in text
        assert {labels["upload_id"]: v for labels, v in samples(text, "completed_uploads_total")} == {
            f"upload-{i}": KEYS // UPLOADS for i in range(UPLOADS)}
        assert samples(text, f"{SIZE.duration}_count") == [({}, KEYS)]
        assert SIZE_BYTES not in {m.name for _, m in metrics_of(memory)}


def test_an_unknown_drop_label_is_a_settings_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV["drop_labels"], "object_key,objectkey")
    with pytest.raises(SettingsError, match=r"^TUIST_METRICS_DROP_LABELS='object_key,objectkey' is not valid: "
                                            r"\['objectkey'\] is not a label of any catalogue metric"):
        telemetry.setup(registry=Registry(), serve=False, set_global=False)
    monkeypatch.delenv(ENV["drop_labels"])
    with pytest.raises(SettingsError, match=r"drop_labels \(env TUIST_METRICS_DROP_LABELS\)"):
        telemetry.setup(registry=Registry(), serve=False, set_global=False, drop_labels="le")
    assert telemetry.current() is None
