"""The registry: label validation, recording semantics, bad input, overflow, callbacks, concurrency."""

from __future__ import annotations

import enum
import logging
import math
import threading

import pytest

from telemetry.catalogue import OVERFLOW_LABEL, OVERFLOW_METRIC, spec
from telemetry.exposition.render import escape_label_value, label_inner, render
from telemetry.registry import (
    CounterFamily,
    GaugeFamily,
    HistogramFamily,
    Registry,
    default_registry,
)

RUNS = "tuist_runs_total"
RUN_MS = "tuist_runs_duration_milliseconds"
PARTS = "tuist_storage_multipart_generate_upload_part_presigned_url_count"


class Command(enum.Enum):
    BUILD = "build"


def test_one_family_per_catalogue_entry_with_typed_accessors(registry: Registry) -> None:
    assert isinstance(registry.counter(RUNS), CounterFamily)
    assert isinstance(registry.histogram(RUN_MS), HistogramFamily)
    assert isinstance(registry.gauge("tuist_projects_total"), GaugeFamily)
    assert RUNS in registry and "nope" not in registry
    with pytest.raises(TypeError, match="tuist_runs_total is a counter, not a histogram"):
        registry.histogram(RUNS)
    with pytest.raises(KeyError, match="'nope' is not a metric of this registry"):
        registry["nope"]


def test_labels_by_position_and_by_name_resolve_to_one_series(registry: Registry) -> None:
    family = registry.counter(RUNS)
    a = family.labels("build", "true", "0")
    b = family.labels(name="build", status="0", is_ci="true")
    c = family.labels("build", True, 0)
    d = family.labels(Command.BUILD, True, 0)
    assert a is b is c is d
    assert a.labels == ("build", "true", "0")
    a.inc()
    assert 'tuist_runs_total{name="build",is_ci="true",status="0"} 1\n' in render(registry, None)


def test_bools_and_ints_are_different_label_values(registry: Registry) -> None:
    # True == 1 and hash(True) == hash(1): the cache must not hand back the other one's series.
    family = registry.counter(PARTS)
    one = family.labels("k", 1, "u")
    true = family.labels("k", True, "u")
    assert one is not true
    assert (one.labels[1], true.labels[1]) == ("1", "true")
    assert family.labels("k", True, "u") is true and family.labels("k", 1, "u") is one
    assert family.labels("k", "1", "u") is one
    false = family.labels("k", False, "u")
    zero = family.labels("k", 0, "u")
    assert (false.labels[1], zero.labels[1]) == ("false", "0")


@pytest.mark.parametrize(("call", "message"), [
    (lambda f: f.labels("build", "true"),
     r"tuist_runs_total: expected 3 label values for \['name', 'is_ci', 'status'\], got 2"),
    (lambda f: f.labels(name="build", is_ci="true", status="0", host="x"),
     r"tuist_runs_total: labels are \['name', 'is_ci', 'status'\]; unknown \['host'\]"),
    (lambda f: f.labels(name="build", is_ci="true"), r"tuist_runs_total: labels are .*; missing \['status'\]"),
    (lambda f: f.labels("build", "yes", "0"), r"tuist_runs_total: label is_ci='yes' is not one of \['false', 'true'\]"),
    (lambda f: f.labels("build", "true", 2), r"tuist_runs_total: label status='2' is not one of \['0', '1'\]"),
    (lambda f: f.labels("", "true", "0"), r"tuist_runs_total: label name must not be empty"),
])
def test_bad_label_sets_raise_value_error_naming_the_metric_and_what_is_allowed(registry: Registry, call: object,
                                                                                message: str) -> None:
    family = registry.counter(RUNS)
    kept = family.labels("build", "true", "0")
    kept.inc(3)
    with pytest.raises(ValueError, match=message):
        call(family)  # type: ignore[operator]
    assert kept.value == 3
    assert [c.labels for c in family.series()] == [("build", "true", "0")]


def test_label_values_of_other_types_are_type_errors(registry: Registry) -> None:
    family = registry.counter(RUNS)
    with pytest.raises(TypeError, match="label values are str, int, bool or enum, got float"):
        family.labels("build", "true", 0.0)
    with pytest.raises(TypeError, match="by position or by name, not both"):
        family.labels("build", is_ci="true", status="0")


def test_counter_semantics_and_bad_increments(registry: Registry) -> None:
    child = registry.counter(RUNS).labels("build", "true", "0")
    child.inc()
    child.inc(2)
    child.inc(0.5)
    assert child.value == 3.5
    for bad in (-1, math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match=r"tuist_runs_total: increments must be finite and >= 0"):
            child.inc(bad)
    assert child.value == 3.5


def test_label_less_counters_exist_from_zero_and_other_families_start_empty(registry: Registry) -> None:
    uploads = registry.counter("tuist_cache_uploads_total")
    assert [(c.labels, c.value) for c in uploads.series()] == [((), 0)]
    assert registry.counter(RUNS).series() == []
    assert registry.gauge("tuist_projects_total").series() == []
    assert registry.histogram(RUN_MS).series() == []


def test_gauge_semantics_and_bad_values(registry: Registry) -> None:
    g = registry.gauge("tuist_http_queue_in_use_connections").labels("api.github.com")
    g.set(5)
    g.inc()
    g.dec(3)
    assert g.value == 3
    g.set(-2)  # a gauge may go below zero
    assert g.value == -2
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="tuist_http_queue_in_use_connections: gauge"):
            g.set(bad)
        with pytest.raises(ValueError, match="tuist_http_queue_in_use_connections: gauge"):
            g.inc(bad)
    assert g.value == -2


def test_histogram_buckets_are_upper_inclusive_like_opentelemetry(registry: Registry) -> None:
    h = registry.histogram(RUN_MS).labels("build", "false", "1")
    bounds = spec(RUN_MS).buckets
    assert bounds[:3] == (100, 500, 1_000)
    for v in (0, 100, 100.0001, 500, 4_000_000):
        h.observe(v)
    counts, total, count = h.snapshot()
    assert len(counts) == len(bounds) + 1
    assert counts[0] == 2  # 0 and exactly 100
    assert counts[1] == 2  # (100, 500]
    assert counts[-1] == 1  # above the last bound
    assert count == 5 and total == pytest.approx(4_000_700.0001)
    assert (h.min, h.max) == (0, 4_000_000)


def test_bad_observations_leave_the_histogram_as_it_was(registry: Registry) -> None:
    h = registry.histogram(RUN_MS).labels("build", "false", "1")
    h.observe(12.5)
    before = h.snapshot()
    for bad in (-0.001, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"tuist_runs_duration_milliseconds: observations must be finite "
                                             r"and >= 0, got"):
            h.observe(bad)
    assert h.snapshot() == before


def test_overflow_series_after_the_limit_and_the_overflow_counter() -> None:
    registry = Registry(limits={RUNS: 2})
    family = registry.counter(RUNS)
    a = family.labels("a", "true", "0")
    b = family.labels("b", "true", "0")
    c = family.labels("c", "true", "0")
    d = family.labels("d", "false", "1")
    assert c is d and c.overflow and not a.overflow
    assert c.labels == ("true",)
    a.inc()
    b.inc()
    c.inc(5)
    d.inc()
    assert family.labels("a", "true", "0") is a, "existing series keep their labels"
    series = family.series()
    assert [s.labels for s in series] == [("a", "true", "0"), ("b", "true", "0"), ("true",)]
    assert series[-1].value == 6
    report = registry.counter(OVERFLOW_METRIC).labels(RUNS)
    assert report.value == 2  # measurements, not increments
    assert f'tuist_runs_total{{{OVERFLOW_LABEL}="true"}} 6\n' in render(registry, None)
    # Bad label values are still rejected once the family overflows.
    with pytest.raises(ValueError, match="is not one of"):
        family.labels("e", "maybe", "0")


def test_histogram_and_gauge_overflow_report_each_measurement() -> None:
    registry = Registry(cardinality_limit=1)
    h = registry.histogram(RUN_MS)
    h.labels("a", "true", "0").observe(1)
    h.labels("b", "true", "0").observe(2)
    h.labels("c", "true", "0").observe(3)
    assert h.series()[-1].snapshot()[2] == 2
    g = registry.gauge("tuist_repo_pool_ready_conn_count")
    g.labels("p1").set(1)
    g.labels("p2").set(2)
    g.labels("p3").inc()
    report = registry.counter(OVERFLOW_METRIC)
    assert {c.labels[0]: c.value for c in report.series()} == {
        RUN_MS: 2, "tuist_repo_pool_ready_conn_count": 2}


def test_limits_must_name_catalogue_metrics_and_be_positive() -> None:
    with pytest.raises(ValueError, match=r"cardinality limits for metrics not in the catalogue: \['nope'\]"):
        Registry(limits={"nope": 3})
    with pytest.raises(ValueError, match="at least 1"):
        Registry(cardinality_limit=0)


def test_gauge_callbacks_run_at_collection_and_can_be_removed(registry: Registry,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    family = registry.gauge("tuist_repo_pool_ready_conn_count")
    remove = family.add_callback(lambda: [(("main",), 4), ({"pool": "replica"}, 2)])

    def broken() -> list[tuple[tuple[str], float]]:
        raise RuntimeError("db down")

    family.add_callback(broken)
    with caplog.at_level(logging.ERROR):
        registry.observe_gauges()
    assert {c.labels: c.value for c in family.series()} == {("main",): 4, ("replica",): 2}
    assert "gauge callback for tuist_repo_pool_ready_conn_count failed" in caplog.text
    remove()
    family.labels("main").set(0)
    registry.observe_gauges()
    assert family.labels("main").value == 0
    remove()  # removing twice is harmless


def test_clear_forgets_series_but_keeps_label_less_counters(registry: Registry) -> None:
    registry.counter(RUNS).labels("build", "true", "0").inc()
    registry.counter("tuist_cache_uploads_total").labels().inc(4)
    registry.counter(PARTS).labels("k", 1, "u").inc()
    registry.clear()
    assert registry.counter(RUNS).series() == []
    assert [(c.labels, c.value) for c in registry.counter("tuist_cache_uploads_total").series()] == [((), 0)]
    fresh = registry.counter(PARTS).labels("k", 1, "u")
    assert fresh.value == 0


def test_concurrent_recording_loses_nothing(registry: Registry) -> None:
    counter = registry.counter(RUNS)
    hist = registry.histogram(RUN_MS)
    threads_n, per_thread = 8, 5_000
    start = threading.Barrier(threads_n)

    def work(i: int) -> None:
        start.wait()
        for j in range(per_thread):
            labels = ("build" if j % 2 else "test", "true", "0")
            counter.labels(*labels).inc()
            hist.labels(*labels).observe(1.0)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(c.value for c in counter.series()) == threads_n * per_thread
    assert sum(h.snapshot()[2] for h in hist.series()) == threads_n * per_thread
    assert sum(h.snapshot()[1] for h in hist.series()) == threads_n * per_thread


def test_label_escaping_helpers() -> None:
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert escape_label_value("plain ü") == "plain ü"
    assert label_inner(("a", "b"), ("x", 'y"')) == 'a="x",b="y\\"",'
    assert label_inner((), ()) == ""


def test_default_registry_is_one_per_process() -> None:
    assert default_registry() is default_registry()


def test_observe_measured_matches_observe_on_every_read() -> None:
    """Deferred bucketing is invisible to readers: snapshot() (render, OTel) sees every value, exactly."""
    import random
    import threading

    from telemetry.catalogue import REPO_QUERY_DURATION

    reg = Registry()
    family = reg.histogram(REPO_QUERY_DURATION)
    direct, deferred = family.labels("p", "SELECT"), family.labels("p", "INSERT")
    values = [random.Random(7).uniform(0, 600) for _ in range(1300)] + [0.0, 0.1, 1000.0]
    for v in values[:700]:  # crosses the 512-value inline drain once
        direct.observe(v)
        deferred.observe_measured(v)
    assert deferred.snapshot() == direct.snapshot()

    def hammer(chunk: list[float]) -> None:
        for v in chunk:
            deferred.observe_measured(v)

    rest = values[700:]
    threads = [threading.Thread(target=hammer, args=(rest[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for v in rest:
        direct.observe(v)
    for t in threads:
        t.join()
    counts, total, n = deferred.snapshot()
    d_counts, d_total, d_n = direct.snapshot()
    assert (counts, n) == (d_counts, d_n) and abs(total - d_total) < 1e-6
    assert (deferred.min, deferred.max) == (direct.min, direct.max) == (0.0, 1000.0)


def test_observe_measured_on_the_overflow_series_is_reported() -> None:
    from telemetry.catalogue import OVERFLOW_METRIC, REPO_QUERY_DURATION

    reg = Registry(limits={REPO_QUERY_DURATION: 1})
    family = reg.histogram(REPO_QUERY_DURATION)
    family.labels("p", "SELECT").observe_measured(1.0)
    overflow = family.labels("p", "DELETE")
    assert overflow.overflow
    overflow.observe_measured(2.0)
    overflow.observe_measured(3.0)
    assert overflow.snapshot()[2] == 2
    assert reg.counter(OVERFLOW_METRIC).labels(REPO_QUERY_DURATION).value == 2
