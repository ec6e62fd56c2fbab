"""Bad values never take /metrics down or make it enormous (issue 11, points 1-3).

- Label bombs: 400 multipart-part requests with 200 KB ``upload_id`` values through the real reference service
  keep the scrape within a few MB (on main each scrape grew by about 3.6 MB per request); long values are cut
  with a stable hash suffix and each stream's label values stay within its byte budget.
- Numbers: whatever the API accepts is converted at record time (Decimal, Fraction), bools and text are refused
  with a TypeError naming the metric, values past the float range with a ValueError naming it, and a failing
  call changes nothing (``runs.record`` moves its counter and histogram together or not at all; a NaN gauge set
  leaves no series).
- Reserved names: ``le`` on a histogram, ``__name__`` on any metric or in ``OTEL_RESOURCE_ATTRIBUTES``,
  ``quantile`` and ``otel_scope_*`` attributes give an exposition promtool accepts.
"""

from __future__ import annotations

import hashlib
import logging
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from telemetry.catalogue import OVERFLOW_LABEL, OVERFLOW_METRIC, PROJECTS, RUNS_DURATION, RUNS_TOTAL, storage_names
from telemetry.config import ENV, LABEL_BYTES_PER_SERIES, LABEL_VALUE_MAX_LENGTH, Settings, SettingsError
from telemetry.exposition.labels import label_name
from telemetry.recorders import Recorders
from telemetry.registry import Registry
from telemetry.store import label_bytes
from telemetry.testing import isolated, parse_exposition, sample_value, wait_for

from .service_process import ServiceProcess, issue_token
from .test_prometheus import NOT_YET, api, prometheus_scraping
from .test_promtool import promtool

PART_URL = storage_names("multipart_generate_upload_part_presigned_url")
BOMBS = 400
BOMB_BYTES = 200_000
# What the 400 bombs may add to one scrape. The stream's label values take at most limit x 128 bytes (256 KB
# by default) and each value is at most 256 characters; the duration histogram writes them on each of its
# bucket lines; measured without the service's upload-id check: about 3.5 MB added (main: about 1.4 GB). With
# the check, refused requests add no series at all.
BOMB_GROWTH_BOUND = 5_000_000


# --- 1. label values: length cap, byte budget, the scrape's size ----------------------------------------

def test_label_bomb_through_the_service_storage_endpoint_keeps_the_scrape_bounded(tmp_path: Path) -> None:
    with ServiceProcess(tmp_path, traffic=False) as service:
        service.wait_ready()
        token = issue_token(service)
        auth = {"authorization": f"Bearer {token}"}
        base = f"{service.url}/api/projects/acme/ios-app/cache/{'ab' * 32}/multipart"
        before = len(service.scrape().encode())
        with httpx.Client(headers=auth, timeout=30) as client:
            for i in range(BOMBS):
                upload_id = f"{i:06d}" + "u" * (BOMB_BYTES - 6)
                response = client.post(f"{base}/part", json={"upload_id": upload_id, "part_number": 1})
                assert response.status_code == 400, response.status_code
        text = service.scrape()
    after = len(text.encode())
    assert after - before < BOMB_GROWTH_BOUND, (before, after)
    # The upload id is checked before the operation is recorded: a refused request leaves no series at all.
    # (A value that does reach a label is cut to the length cap: the registry tests below.)
    samples = [s for s in parse_exposition(text) if s.name == f"{PART_URL.count}"]
    assert not [s for s in samples if len(s.labels.get("upload_id", "")) > LABEL_VALUE_MAX_LENGTH]
    assert not [s for s in samples if s.labels.get("upload_id", "").startswith("000000u")]


def test_long_values_are_cut_with_a_stable_hash_and_the_byte_budget_overflows() -> None:
    registry = Registry(cardinality_limit=100)
    family = registry.counter(RUNS_TOTAL)
    long_a, long_b = "a" * 300 + "1", "a" * 300 + "2"
    family.labels(long_a, True, 0).inc()
    family.labels(long_a, True, 0).inc()
    family.labels(long_b, True, 0).inc()
    (stream,) = family.streams
    points, _ = stream.collect()
    digest = hashlib.blake2b(long_a.encode(), digest_size=8).hexdigest()
    cut = "a" * (LABEL_VALUE_MAX_LENGTH - 17) + "~" + digest
    assert [(v[0], c.value) for v, c in points][:1] == [(cut, 2)]
    assert len({v[0] for v, _ in points}) == 2  # distinct long values stay distinct
    # Budget: 100 x 128 bytes of label values; each series here weighs 256 + 4 + 1 bytes.
    for i in range(100):
        family.labels(f"{i:03d}" + "x" * 400, True, 0).inc()
    size = LABEL_VALUE_MAX_LENGTH + len("true") + len("0")
    assert label_bytes(points[0][0]) == size
    assert len(stream) == 100 * LABEL_BYTES_PER_SERIES // size == 49
    assert sum(c.value for c in stream.cells()) == 103  # nothing recorded is lost: the rest overflowed
    overflow = registry.counter(OVERFLOW_METRIC).labels(RUNS_TOTAL).value
    assert overflow == 100 - (49 - 2)  # of the 100 new label sets, 47 fitted beside long_a's and long_b's


def test_label_settings_are_read_checked_and_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match=ENV["label_value_max_length"]):
        Settings.from_env({ENV["label_value_max_length"]: "31"})
    with pytest.raises(SettingsError, match=ENV["label_bytes_per_series"]):
        Settings.from_env({ENV["label_bytes_per_series"]: "0"})
    monkeypatch.setenv(ENV["label_value_max_length"], "40")
    monkeypatch.setenv(ENV["label_bytes_per_series"], "64")
    with isolated(runtime_metrics=False) as t:
        t.recorders.runs.record("r" * 100, is_ci=False, status=0, duration_ms=1)
        (stream,) = t.registry.counter(RUNS_TOTAL).streams
        assert stream.bytes_per_series == 64
        assert [len(v[0]) for v, _ in stream.collect()[0]] == [40]


# --- 2. numbers -------------------------------------------------------------------------------------------

def test_numbers_are_converted_refused_whole_and_name_the_metric() -> None:
    registry = Registry()
    rec = Recorders(registry)
    counter = registry.counter(RUNS_TOTAL).labels("build", True, 0)
    counter.inc(Decimal("12"))
    counter.inc(Fraction(1, 2))
    assert counter.value == 12.5 and type(counter.value) is float
    for bad in (True, "3", b"3"):
        with pytest.raises(TypeError, match=RUNS_TOTAL):
            counter.inc(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"{RUNS_TOTAL}: .* outside the float range"):
        counter.inc(10**400)
    assert counter.value == 12.5

    # runs.record touches a counter and a histogram: a bad duration moves neither.
    for bad in (10**400, True, Decimal("NaN"), "5"):
        with pytest.raises((TypeError, ValueError), match=RUNS_DURATION):
            rec.runs.record("test", is_ci=False, status=1, duration_ms=bad)  # type: ignore[arg-type]
    rec.runs.record("test", is_ci=False, status=1, duration_ms=Decimal("12"))
    gauge = registry.gauge(PROJECTS)
    with pytest.raises(ValueError, match=PROJECTS):
        gauge.labels().set(float("nan"))
    with pytest.raises(TypeError, match=PROJECTS):
        gauge.labels().set(False)
    from telemetry.exposition.render import render

    text = render(registry, None)
    total = sample_value(text, RUNS_TOTAL, name="test", is_ci="false", status="1")
    count = sample_value(text, f"{RUNS_DURATION}_count", name="test", is_ci="false", status="1")
    inf = sample_value(text, f"{RUNS_DURATION}_bucket", name="test", is_ci="false", status="1", le="+Inf")
    assert (total, count, inf) == (1, 1, 1)
    assert sample_value(text, f"{RUNS_DURATION}_sum", name="test", is_ci="false", status="1") == 12
    assert PROJECTS not in {s.name for s in parse_exposition(text)}  # the failed sets left no series
    assert "Decimal" not in text and "Fraction" not in text and "True" not in text
    result = promtool(text)
    assert "error while linting" not in result.stderr and result.returncode in (0, 3), result.stderr


def test_a_failed_gauge_set_leaves_no_series_in_multi_process_mode(tmp_path: Path) -> None:
    with isolated(runtime_metrics=False, multiprocess_dir=str(tmp_path)) as t:
        in_use = t.registry.gauge("tuist_http_queue_in_use_connections")
        with pytest.raises(ValueError, match="tuist_http_queue_in_use_connections"):
            in_use.labels("api.example").set(float("nan"))
        t.registry.gauge("tuist_http_queue_available_connections").labels("api.example").set(0)
        names = {s.name for s in parse_exposition(t.scrape())}
    assert "tuist_http_queue_available_connections" in names  # a gauge set to 0 is a reading
    assert "tuist_http_queue_in_use_connections" not in names


def test_label_values_of_the_wrong_type_name_the_metric_and_the_label() -> None:
    family = Registry().counter(RUNS_TOTAL)
    for bad in (None, b"build", 1.5, ["build"]):
        with pytest.raises(TypeError, match=f"{RUNS_TOTAL}: .*name="):
            family.labels(bad, True, 0)  # type: ignore[arg-type]


# --- 3. reserved and clashing label names -----------------------------------------------------------------

def test_reserved_attribute_names_keep_the_exposition_valid(monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "__name__=x,deployment.environment=test")
    with isolated(runtime_metrics=False, scope_labels=True) as t:
        assert t.meter_provider is not None
        meter = t.meter_provider.get_meter("app", "1.0")
        histogram = meter.create_histogram("app.latency", unit="ms")
        counter = meter.create_counter("app.jobs")
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                histogram.record(5, {"le": "10", "route": "/a", "quantile": "0.5"})
                counter.add(1, {"__name__": "evil", "otel_scope_name": "fake", "__x": "y"})
            text = t.scrape()
    result = promtool(text)
    assert "error while linting" not in result.stderr and result.returncode in (0, 3), result.stderr
    assert sample_value(text, "app_latency_milliseconds_count", route="/a", otel_scope_name="app",
                        otel_scope_version="1.0") == 3
    assert sample_value(text, "app_jobs_total", key__name__="evil", key__x="y", otel_scope_name="app",
                        otel_scope_version="1.0") == 3
    target = [s for s in parse_exposition(text) if s.name == "target_info"]
    assert target and target[0].labels["key__name__"] == "x"
    dropped = [r.getMessage() for r in caplog.records if "left off the Prometheus series" in r.getMessage()]
    assert sorted(m.split("'")[1] for m in dropped) == ["le", "otel_scope_name", "quantile"]  # once per key
    assert label_name("__name__") == "key__name__" and label_name("9a") == "key_9a"
    assert OVERFLOW_LABEL not in text


@pytest.mark.slow
def test_a_real_prometheus_scrapes_reserved_attribute_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The same names as above, scraped by Prometheus itself: the target stays up with no scrape error (main:
    ``label name "le" is not unique: invalid sample``) and the renamed keys are queryable."""
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "__name__=x,deployment.environment=test")
    with isolated(serve=True, runtime_metrics=False) as t:
        assert t.meter_provider is not None and t.metrics_url
        meter = t.meter_provider.get_meter("app", "1.0")
        meter.create_histogram("app.latency", unit="ms").record(5, {"le": "10", "route": "/a", "quantile": "0.5"})
        meter.create_counter("app.jobs").add(3, {"__name__": "evil", "__x": "y"})
        with prometheus_scraping(tmp_path, t.metrics_url) as prometheus:
            [jobs] = wait_for(lambda: api(prometheus, "/api/v1/query", query='app_jobs_total{key__name__="evil"}')
                              ["result"], 30, what="the renamed key in Prometheus", interval=0.5, ignore=NOT_YET)
            assert jobs["metric"]["key__x"] == "y" and float(jobs["value"][1]) == 3
            [latency] = api(prometheus, "/api/v1/query", query="app_latency_milliseconds_count")["result"]
            assert latency["metric"]["route"] == "/a" and "quantile" not in latency["metric"]


def test_remote_write_uses_the_same_label_names() -> None:
    pytest.importorskip("opentelemetry.exporter.prometheus_remote_write")
    from telemetry.remote_write import RemoteWriteExporter

    reader = InMemoryMetricReader()
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource

    provider = MeterProvider(resource=Resource({"service.name": "rw", "__name__": "x"}), metric_readers=[reader],
                             shutdown_on_exit=False)
    try:
        provider.get_meter("app").create_histogram("app.latency").record(1, {"le": "1", "__name__": "n"})
        data = RemoteWriteExporter("http://127.0.0.1:9/api/v1/write").prometheus_data(reader.get_metrics_data())
    finally:
        provider.shutdown()
    metrics = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    latency = metrics["app_latency"]
    assert isinstance(latency.data, HistogramData)
    attributes = dict(latency.data.data_points[0].attributes)
    assert "le" not in attributes and attributes["key__name__"] == "n"
    assert dict(metrics["target_info"].data.data_points[0].attributes)["key__name__"] == "x"
