"""Prometheus remote write straight from each process (telemetry/remote_write.py).

First against a loopback receiver that decodes what arrives: the stock exporter appends units to names, writes
histogram buckets under the bare name with per-bucket (not cumulative) counts and turns every resource
attribute into a label; ``RemoteWriteExporter`` sends exactly the names, labels and values a scrape of
/metrics gives, with ``job``/``instance`` from the resource. Then end to end: three processes with the stock
exporter and three with ours push into a real Prometheus 2.42 (Debian package) started with
``--web.enable-remote-write-receiver``; the series add up across processes and, through ours, every catalogue
name arrives under its documented name with its documented labels.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.exporter.prometheus_remote_write", reason="the remote-write extra")

import snappy
from opentelemetry.exporter.prometheus_remote_write import PrometheusRemoteWriteMetricsExporter
from opentelemetry.exporter.prometheus_remote_write.gen.remote_pb2 import WriteRequest
from opentelemetry.sdk.metrics.export import (
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
)
from opentelemetry.sdk.resources import Resource

import telemetry
from telemetry.catalogue import (
    CACHE_UPLOADED_BYTES,
    CATALOGUE,
    HTTP_REQUEST_COUNT,
    HTTP_REQUEST_DURATION,
    RUNS_DURATION,
    RUNS_TOTAL,
    Kind,
    MetricSpec,
    documented,
    documented_names,
    storage_names,
)
from telemetry.registry import Registry
from telemetry.remote_write import RemoteWriteExporter, remote_write_reader
from telemetry.testing import parse_exposition, wait_for

from .conftest import free_port, require_binary
from .test_bounded_shutdown import Sink
from .test_prometheus import NOT_YET, api, stop

ROOT = Path(__file__).resolve().parent.parent
N = 7  # runs recorded by each process
PROCESSES = 3

Sample = tuple[str, dict[str, str], float]


def decode(body: bytes) -> list[Sample]:
    """A remote-write request body: (name, labels without __name__, last value) per series."""
    request = WriteRequest()
    request.ParseFromString(snappy.uncompress(body))
    out = []
    for series in request.timeseries:
        labels = {label.name: label.value for label in series.labels}
        out.append((labels.pop("__name__"), labels, series.samples[-1].value))
    return out


def record_everything(t: Any, runs: int) -> None:
    """``runs`` runs, and one recording of every other catalogue metric with allowed label values."""
    for i in range(runs):
        t.recorders.runs.record("build", is_ci=i % 2 == 0, status=0, duration_ms=700.0)
    reg: Registry = t.registry
    for spec in CATALOGUE:
        if spec.name in (RUNS_TOTAL, RUNS_DURATION):
            continue
        values = [sorted(spec.allowed[label])[0] if label in spec.allowed else "x" for label in spec.labels]
        if spec.kind is Kind.COUNTER:
            reg.counter(spec.name).labels(*values).inc()
        elif spec.kind is Kind.HISTOGRAM:
            reg.histogram(spec.name).labels(*values).observe(spec.buckets[0])
        else:
            reg.gauge(spec.name).labels(*values).set(3)


# --- against a decoding receiver on loopback --------------------------------------------------------------


@pytest.fixture
def sink() -> Iterator[Sink]:
    receiver = Sink(204)
    yield receiver
    receiver.close()


def push_once(reader: PeriodicExportingMetricReader, registry: Registry, sink: Sink) -> tuple[list[Sample], str]:
    """Record everything once, shut down (the final export) and return what arrived and the scrape."""
    t = telemetry.setup(registry=registry, serve=False, metric_readers=[reader], service_name="rw")
    record_everything(t, 2)
    scrape = t.scrape()
    telemetry.shutdown()
    [(path, body)] = sink.bodies
    assert path == "/api/v1/write"
    return decode(body), scrape


def test_stock_exporter_appends_units_and_writes_histograms_prometheus_cannot_use(
        sink: Sink, registry: Registry, clean_setup: None) -> None:
    """What the maintained exporter does on its own (0.66b1); RemoteWriteExporter exists because of it."""
    reader = PeriodicExportingMetricReader(PrometheusRemoteWriteMetricsExporter(sink.url("/api/v1/write")),
                                           export_interval_millis=60_000)
    samples, _ = push_once(reader, registry, sink)
    names = {name for name, _, _ in samples}
    # Unitless names arrive unchanged (no _total is added or removed) ...
    assert {RUNS_TOTAL, HTTP_REQUEST_COUNT} <= names
    # ... names with a unit gain it verbatim, histogram samples included.
    assert CACHE_UPLOADED_BYTES not in names and f"{CACHE_UPLOADED_BYTES}_By" in names
    assert f"{HTTP_REQUEST_DURATION}_ns_sum" in names and f"{HTTP_REQUEST_DURATION}_sum" not in names
    # Buckets under the bare name, each bucket's own count: le="+Inf" is not the count.
    runs_ms = f"{RUNS_DURATION}_ms"
    assert f"{RUNS_DURATION}_bucket" not in names and f"{runs_ms}_bucket" not in names
    buckets: dict[str, float] = {}
    for name, labels, value in samples:
        if name == runs_ms:
            buckets[labels["le"]] = buckets.get(labels["le"], 0) + value
    count = sum(value for name, _, value in samples if name == f"{runs_ms}_count")
    assert count == 2 and buckets["1000"] == 2 and buckets["+Inf"] == 0
    # Every resource attribute is a label on every series; no job or instance.
    runs = next(labels for name, labels, _ in samples if name == RUNS_TOTAL)
    assert runs["service_name"] == "rw" and "service_instance_id" in runs and "telemetry_sdk_version" in runs
    assert "job" not in runs and "instance" not in runs
    assert "target_info" not in names
    # A point's own service_name attribute (runtime metrics' application_info) meets the resource's: the
    # series has the label twice, which makes Prometheus refuse the whole request.
    [(_, body)] = sink.bodies
    request = WriteRequest()
    request.ParseFromString(snappy.uncompress(body))
    twice = {next(label.value for label in ts.labels if label.name == "__name__") for ts in request.timeseries
             if [label.name for label in ts.labels].count("service_name") == 2}
    assert twice == {"application_info"}


def scraped(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples of a text exposition under the names written (a parser would add _total to counters)."""
    return {(s.name, frozenset(s.labels.items())): s.value for s in parse_exposition(text)}


def test_remote_write_exporter_sends_what_a_scrape_shows(sink: Sink, registry: Registry, clean_setup: None) -> None:
    samples, scrape = push_once(remote_write_reader(sink.url("/api/v1/write"), interval_s=60), registry, sink)
    instance = f"{os.uname().nodename}:{os.getpid()}"
    pushed: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for name, labels, value in samples:
        assert (labels.pop("job"), labels.pop("instance")) == ("rw", instance), name
        pushed[(name, frozenset(labels.items()))] = value
    expected = scraped(scrape)
    info = [key for key in pushed if key[0] == "target_info"]
    assert len(info) == 1 and ("telemetry_sdk_language", "python") in info[0][1]
    del pushed[info[0]]
    expected = {k: v for k, v in expected.items() if k[0] != "target_info"}
    # The same series, names and labels (runtime metrics included) ...
    assert set(pushed) == set(expected)
    # ... and the catalogue's values (runtime values move between the two collections).
    for key, value in expected.items():
        if key[0].startswith("tuist_"):
            assert pushed[key] == value, key
    assert pushed[(f"{RUNS_DURATION}_bucket", frozenset({("name", "build"), ("is_ci", "true"), ("status", "0"),
                                                         ("le", "+Inf")}))] == 1


def test_labels_that_sanitise_alike_are_merged_and_a_points_job_kept(registry: Registry, clean_setup: None,
                                                                     sink: Sink) -> None:
    reader = remote_write_reader(sink.url("/api/v1/write"), interval_s=60)
    t = telemetry.setup(registry=registry, serve=False, metric_readers=[reader], service_name="rw",
                        runtime_metrics=False)
    assert t.meter_provider is not None
    counter = t.meter_provider.get_meter("app").create_counter("app.jobs")
    counter.add(2, {"a.b": "dot", "a_b": "underscore", "job": "nightly", "flag": True})
    telemetry.shutdown()
    [(_, body)] = sink.bodies
    [(name, labels, value)] = [s for s in decode(body) if s[0].startswith("app")]
    assert (name, value) == ("app_jobs_total", 2)
    assert labels == {"a_b": "dot;underscore", "exported_job": "nightly", "flag": "true", "job": "rw",
                      "instance": f"{os.uname().nodename}:{os.getpid()}"}


def test_an_unreachable_receiver_fails_the_export_within_its_timeout() -> None:
    exporter = RemoteWriteExporter(f"http://127.0.0.1:{free_port()}/api/v1/write", timeout_s=1)
    started = time.monotonic()
    assert exporter.export(MetricsData([])) is MetricExportResult.SUCCESS  # nothing to send: no request
    # One resource: its target_info series is sent, and refused.
    assert exporter.export(MetricsData([ResourceMetrics(Resource.create({}), [], "")])) is MetricExportResult.FAILURE
    assert time.monotonic() - started < 1.5
    with pytest.raises(ValueError, match="positive"):
        RemoteWriteExporter("http://127.0.0.1:9/api/v1/write", timeout_s=0)


# --- end to end into a real Prometheus --------------------------------------------------------------------


def child(mode: str, endpoint: str, service: str, runs: int) -> None:
    """One pushing process: half the runs, a few periodic exports, the rest; shutdown sends the last."""
    if mode.startswith("stock"):
        reader = PeriodicExportingMetricReader(PrometheusRemoteWriteMetricsExporter(endpoint=endpoint),
                                               export_interval_millis=200)
    else:
        reader = remote_write_reader(endpoint, interval_s=0.2, timeout_s=5)
    # The stock exporter's requests are refused whole while runtime metrics are on (see the fixture).
    t = telemetry.setup(metrics_port=0, serve=False, metric_readers=[reader], service_name=service,
                        runtime_metrics=mode != "stock")
    record_everything(t, runs // 2)
    time.sleep(0.7)
    for _ in range(runs - runs // 2):
        t.recorders.runs.record("test", is_ci=True, status=1, duration_ms=700.0)
    telemetry.shutdown()


@pytest.fixture(scope="module")
def prometheus_rw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str], list[str]]]:
    """Prometheus receiving remote write (no scrape jobs), after 3 stock and 3 of our processes pushed into it.
    Yields its URL and the instance ids of the stock and of our processes."""
    binary = require_binary("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus_rw")
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\n")
    log = (tmp / "prometheus.log").open("wb")
    prom = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h",
         "--web.enable-remote-write-receiver"],
        stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    children: list[subprocess.Popen[bytes]] = []
    try:
        wait_for(lambda: api(base, "/api/v1/status/buildinfo"), 30, what="Prometheus to be ready", interval=0.5,
                 ignore=NOT_YET)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TUIST_"))}
        for mode in ("stock", "ours", "stock-runtime"):
            for _ in range(PROCESSES if mode != "stock-runtime" else 1):
                children.append(subprocess.Popen(
                    [sys.executable, "-m", "tests.test_remote_write", mode, f"{base}/api/v1/write", f"rw-{mode}",
                     str(N)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        errors = []
        for proc in children:
            _, err = proc.communicate(timeout=40)
            assert proc.returncode == 0, err.decode()
            errors.append(err.decode())
        for err in errors[:-1]:
            assert "Traceback" not in err and "failed" not in err, err
        # With runtime metrics on, application_info carries a service_name attribute; the stock exporter adds
        # the resource's service_name beside it, and Prometheus refuses every request whole ("label name
        # service_name is not unique"): no export of that process after setup() returned arrives.
        assert "Export POST request failed with reason: 500 Server Error" in errors[-1]
        log.flush()
        refused = [line for line in (tmp / "prometheus.log").read_text().splitlines() if "level=error" in line]
        assert refused and all('label name \\"service_name\\" is not unique' in line for line in refused), refused
        host = os.uname().nodename
        ids = [f"{host}:{p.pid}" for p in children]
        yield base, ids[:PROCESSES], ids[PROCESSES:2 * PROCESSES]
    finally:
        for proc in children:
            stop(proc)
        stop(prom)
        log.close()


def query(base: str, promql: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = api(base, "/api/v1/query", query=promql)["result"]
    return result


def scalar(base: str, promql: str) -> float:
    [row] = query(base, promql)
    return float(row["value"][1])


def queried_sample(spec: MetricSpec, name: str) -> str:
    """The doc names a histogram by family (X) or by its samples (X_sum, X_bucket); query a sample."""
    return f"{name}_bucket" if spec.kind is Kind.HISTOGRAM and name == spec.name else name


@pytest.mark.slow
def test_runs_add_up_across_processes_with_either_exporter(prometheus_rw: tuple[str, list[str], list[str]]) -> None:
    base, stock_ids, our_ids = prometheus_rw
    assert scalar(base, 'sum(tuist_runs_total{job="rw-ours"})') == PROCESSES * N
    assert scalar(base, 'sum(tuist_runs_total{service_name="rw-stock"})') == PROCESSES * N
    ours = {row["metric"]["instance"] for row in query(base, 'count by (instance) (tuist_runs_total{job="rw-ours"})')}
    assert ours == set(our_ids)
    stock = {row["metric"]["service_instance_id"]
             for row in query(base, 'count by (service_instance_id) (tuist_runs_total{service_name="rw-stock"})')}
    assert stock == set(stock_ids)
    # Every request carrying application_info was refused: none of the recorded runs arrived. (A periodic
    # export that ran before setup() had registered the runtime metrics may have got through, with zeros.)
    assert query(base, 'tuist_runs_total{service_name="rw-stock-runtime"}') == []
    per_process = query(base, 'sum by (instance) (tuist_runs_total{job="rw-ours"})')
    assert sorted(float(row["value"][1]) for row in per_process) == [N] * PROCESSES


@pytest.mark.slow
def test_every_catalogue_name_arrives_documented_through_ours(prometheus_rw: tuple[str, list[str], list[str]]) -> None:
    base, _, _ = prometheus_rw
    checked = 0
    for spec in CATALOGUE:
        for name in (spec.doc_names or spec.sample_names):
            sample = queried_sample(spec, name)
            series = query(base, f'{{__name__="{sample}", job="rw-ours"}}')
            assert len({row["metric"]["instance"] for row in series}) == PROCESSES, sample
            expected = {*spec.labels, "__name__", "job", "instance"} | ({"le"} if sample.endswith("_bucket") else set())
            for row in series:
                assert set(row["metric"]) == expected, f"{sample}: {sorted(row['metric'])}"
            checked += spec.documented
    assert checked == len(documented_names()) == 53


@pytest.mark.slow
def test_documented_names_the_stock_exporter_changes(prometheus_rw: tuple[str, list[str], list[str]]) -> None:
    """Through the stock exporter a documented name arrives unchanged only if its family has no unit and is
    not a histogram bucket; the rest arrive with the unit appended (X_By, X_ms_bucket-less buckets...)."""
    base, _, _ = prometheus_rw
    missing = []
    for spec in documented():
        for name in spec.doc_names:
            sample = queried_sample(spec, name)
            if not query(base, f'{{__name__="{sample}", service_name="rw-stock"}}'):
                missing.append(name)
    expected = [n for s in documented() for n in s.doc_names if s.unit or s.kind is Kind.HISTOGRAM]
    assert missing == expected
    print(f"\n  changed by the stock exporter ({len(missing)} of 53): {missing}", end="")
    assert CACHE_UPLOADED_BYTES in missing and storage_names("get_object_size").duration in missing
    assert scalar(base, f'count({{__name__="{CACHE_UPLOADED_BYTES}_By", service_name="rw-stock"}})') == PROCESSES


@pytest.mark.slow
def test_histograms_through_ours_are_cumulative_and_usable(prometheus_rw: tuple[str, list[str], list[str]]) -> None:
    base, _, _ = prometheus_rw
    for spec in CATALOGUE:
        if spec.kind is Kind.HISTOGRAM:
            inf = scalar(base, f'sum({spec.name}_bucket{{job="rw-ours", le="+Inf"}})')
            assert inf == scalar(base, f'sum({spec.name}_count{{job="rw-ours"}})') > 0, spec.name
    p50 = scalar(base, f'histogram_quantile(0.5, sum by (le) ({RUNS_DURATION}_bucket{{job="rw-ours"}}))')
    assert 500 < p50 <= 1000  # every run took 700 ms
    # The stock exporter's +Inf "bucket" holds only what fell beyond the last bound: none of the runs.
    assert scalar(base, f'sum({RUNS_DURATION}_ms{{service_name="rw-stock", le="+Inf"}})') == 0
    info = query(base, 'target_info{job="rw-ours"}')
    assert len(info) == PROCESSES and all(row["metric"]["telemetry_sdk_language"] == "python" for row in info)


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
