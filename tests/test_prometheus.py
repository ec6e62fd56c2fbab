"""A real Prometheus (Debian package) scrapes a ``simulate`` process; every documented name must arrive with
its documented type (``/api/v1/metadata``, parsed from our ``# TYPE`` lines) and its label names
(``/api/v1/query``). This is how users will see the endpoint."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from telemetry.catalogue import Kind, MetricSpec, documented, documented_names
from telemetry.testing import wait_for

from .conftest import free_port, require_binary

pytestmark = pytest.mark.slow

# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"__name__", "instance", "job"}


def api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


# Prometheus's API while it starts: connection refused, or a half-written answer.
NOT_YET = (OSError, ValueError)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def prometheus_scraping(tmp: Path, metrics_url: str) -> Iterator[str]:
    """A real Prometheus (Debian 2.42) scraping ``metrics_url`` every second, once it has scraped it; yields its
    API base URL. Afterwards its log must show no parse or type error."""
    binary = require_binary("prometheus")
    host_port = metrics_url.split("//", 1)[1].split("/", 1)[0]
    assert host_port.startswith("127.0.0.1:"), host_port
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                      "scrape_configs:\n  - job_name: tuist\n"
                      f"    static_configs:\n      - targets: ['{host_port}']\n")
    with (tmp / "prometheus.log").open("wb") as log:
        prom = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
            stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            def up() -> list[dict[str, Any]]:
                return [t for t in api(base, "/api/v1/targets")["activeTargets"]
                        if t["health"] == "up" and t["lastScrape"] != "0001-01-01T00:00:00Z"]

            [target] = wait_for(up, 30, what="the target to be scraped", interval=0.5, ignore=NOT_YET)
            assert target["lastError"] == ""
            yield base
        finally:
            stop(prom)
    text = (tmp / "prometheus.log").read_text(errors="replace")
    for bad in ("invalid metric type", "duplicate", "parse error", "expected label name"):
        assert bad not in text, text


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("prometheus")
    require_binary("prometheus")
    metrics_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TUIST_"))}
    simulate = subprocess.Popen(
        [sys.executable, "-m", "telemetry", "simulate", "--host", "127.0.0.1", "--port", str(metrics_port),
         "--interval", "0.1", "--seed", "3"],
        stdout=subprocess.DEVNULL, stderr=(tmp / "simulate.log").open("wb"), env=env)
    try:
        with prometheus_scraping(tmp, f"http://127.0.0.1:{metrics_port}/metrics") as base:
            yield base
    finally:
        stop(simulate)


def families() -> dict[str, MetricSpec]:
    return {s.name: s for s in documented()}


def test_target_is_scraped_without_errors(prometheus: str) -> None:
    def healthy() -> list[dict[str, Any]]:
        targets = api(prometheus, "/api/v1/targets")["activeTargets"]
        return [t for t in targets if t["health"] == "up"]

    [target] = wait_for(healthy, 60, what="the simulate target to be up", interval=0.5, ignore=NOT_YET)
    assert target["lastError"] == ""


def test_metadata_types_every_documented_family_as_documented(prometheus: str) -> None:
    wanted = families()

    def metadata() -> dict[str, list[dict[str, str]]] | None:
        data: dict[str, list[dict[str, str]]] = api(prometheus, "/api/v1/metadata")
        return data if set(wanted) <= set(data) else None

    data = wait_for(metadata, 60, what="metadata for every documented family", interval=0.5, ignore=NOT_YET)
    checked = 0
    for name in documented_names():
        family = next(s for s in wanted.values() if name in s.doc_names)
        [entry] = data[family.name]
        assert entry["type"] == family.kind.value, f"{name}: Prometheus typed {family.name} as {entry['type']}"
        assert entry["help"] == family.help
        checked += 1
    assert checked == 53
    # The counters really are counters under their own names: no _total family was invented beside them.
    for name, entry in data.items():
        if name.endswith("_total") and name.removesuffix("_total") in wanted:
            pytest.fail(f"{name} shadows the documented {name.removesuffix('_total')}")
        assert entry


def query_series(base: str, sample: str) -> list[dict[str, str]]:
    return [r["metric"] for r in api(base, "/api/v1/query", query=f'{{__name__="{sample}"}}')["result"]]


@pytest.mark.parametrize("name", documented_names())
def test_query_returns_each_documented_name_with_its_label_names(prometheus: str, name: str) -> None:
    family = next(s for s in documented() if name in s.doc_names)
    # The doc names a histogram by family (X) or by its samples (X_sum, X_bucket); query a sample.
    sample = f"{name}_bucket" if family.kind is Kind.HISTOGRAM and name == family.name else name
    series = wait_for(lambda: query_series(prometheus, sample), 60, what=f"samples of {sample}", interval=0.5,
                      ignore=NOT_YET)
    expected = set(family.labels) | TARGET_LABELS | ({"le"} if sample.endswith("_bucket") else set())
    for metric in series:
        assert set(metric) == expected, f"{sample}: {sorted(metric)}"
        assert metric["__name__"] == sample and metric["job"] == "tuist"
        for label, allowed in family.allowed.items():
            assert metric[label] in allowed


def test_values_are_plausible(prometheus: str) -> None:
    def runs() -> float:
        result = api(prometheus, "/api/v1/query", query="sum(tuist_runs_total)")["result"]
        return float(result[0]["value"][1]) if result else 0.0

    assert wait_for(runs, 60, what="runs to be counted", interval=0.5, ignore=NOT_YET) >= 5
    quantile = api(prometheus, "/api/v1/query", query=(
        "histogram_quantile(0.5, sum by (le) (tuist_runs_duration_milliseconds_bucket))"))["result"]
    assert quantile and 100 <= float(quantile[0]["value"][1]) <= 3_600_000
    projects = api(prometheus, "/api/v1/query", query="tuist_projects_total")["result"]
    assert projects and float(projects[0]["value"][1]) >= 12


def test_prometheus_log_has_no_scrape_errors(prometheus: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    logs = list(Path(tmp_path_factory.getbasetemp()).glob("prometheus*/prometheus.log"))
    assert logs
    text = logs[0].read_text(errors="replace")
    for bad in ("invalid metric type", "duplicate", "parse error", "expected label name"):
        assert bad not in text, text
