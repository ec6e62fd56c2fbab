"""otel-collector.yaml, checked structurally: no collector binary can be installed here.

What a collector would reject or get wrong at startup is checked instead: every component a pipeline names is
defined (and every defined one used), memory_limiter comes first and batch last in every pipeline, no port
clashes with the service or with another component, the prometheus receiver scrapes the service's /metrics at
15 s, and the exporters keep the documented tuist_* names unchanged (no suffixes, no namespace).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from telemetry.config import Settings

ROOT = Path(__file__).resolve().parent.parent
CONFIG_PATH = ROOT / "otel-collector.yaml"
KINDS = ("receivers", "processors", "exporters")


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CONFIG_PATH.read_text())
    return loaded


def _component_type(name: str) -> str:
    """``otlp/tempo`` is an ``otlp`` component named tempo."""
    return name.split("/", 1)[0]


def _endpoints(node: Any, path: str = "") -> list[tuple[str, str]]:
    """Every ``endpoint`` (host:port) and ``host``/``port`` pair in the config, with where it is."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        if isinstance(node.get("port"), int):
            found.append((path, f"{node.get('host', '')}:{node['port']}"))
        for key, value in node.items():
            if key == "endpoint" and isinstance(value, str):
                found.append((f"{path}.{key}", value))
            else:
                found.extend(_endpoints(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found.extend(_endpoints(item, f"{path}[{i}]"))
    return found


def _listen_ports(config: dict[str, Any]) -> dict[int, str]:
    """Ports the collector listens on: receivers, extensions, the prometheus exporter and its own telemetry
    (not the remote-write exporter's, which is a destination)."""
    ports: dict[int, str] = {}
    for section in ("receivers", "extensions", "exporters"):
        for name, body in (config.get(section) or {}).items():
            if section == "exporters" and _component_type(name) != "prometheus":
                continue
            if section == "receivers" and _component_type(name) == "prometheus":
                continue  # its endpoints are scrape targets
            for where, endpoint in _endpoints(body):
                port = int(endpoint.rsplit(":", 1)[1])
                assert port not in ports, f"port {port} used by {ports.get(port)} and {section}.{name}{where}"
                ports[port] = f"{section}.{name}{where}"
    for where, endpoint in _endpoints(config["service"].get("telemetry", {})):
        port = int(endpoint.rsplit(":", 1)[1])
        assert port not in ports, f"port {port} used twice"
        ports[port] = f"service.telemetry{where}"
    return ports


def test_every_pipeline_component_is_defined_and_every_defined_one_used(config: dict[str, Any]) -> None:
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) >= {"metrics", "traces"}
    used: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for name, pipeline in pipelines.items():
        assert _component_type(name) in ("metrics", "traces", "logs"), name
        for kind in KINDS:
            assert pipeline.get(kind), f"pipeline {name} has no {kind}"
            for component in pipeline[kind]:
                assert component in (config.get(kind) or {}), f"{name}: {kind[:-1]} {component} is not defined"
                used[kind].add(component)
    for kind in KINDS:
        assert set(config[kind]) == used[kind], f"{kind} defined but in no pipeline"
    assert set(config["service"]["extensions"]) == set(config["extensions"])


def test_memory_limiter_first_and_batch_last_in_every_pipeline(config: dict[str, Any]) -> None:
    for name, pipeline in config["service"]["pipelines"].items():
        processors = [_component_type(p) for p in pipeline["processors"]]
        assert processors[0] == "memory_limiter", name
        assert processors[-1] == "batch", name
    limiter = config["processors"]["memory_limiter"]
    assert limiter["check_interval"] and (limiter.get("limit_mib") or limiter.get("limit_percentage"))


def test_required_components(config: dict[str, Any]) -> None:
    assert set(config["receivers"]) == {"otlp", "prometheus"}
    assert set(config["exporters"]) == {"prometheus", "prometheusremotewrite", "debug"}
    assert set(config["extensions"]) == {"health_check", "pprof", "zpages"}
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")
    metrics = config["service"]["pipelines"]["metrics"]
    assert {"otlp", "prometheus"} <= set(metrics["receivers"])
    assert {"prometheus", "prometheusremotewrite"} <= set(metrics["exporters"])
    assert "otlp" in config["service"]["pipelines"]["traces"]["receivers"]


def test_prometheus_receiver_scrapes_the_service_metrics_endpoint_every_15s(config: dict[str, Any]) -> None:
    settings = Settings()
    jobs = config["receivers"]["prometheus"]["config"]["scrape_configs"]
    assert len(jobs) == 1
    job = jobs[0]
    assert job["scrape_interval"] == "15s"  # the Tuist doc: below 10,000 s, 15 s recommended
    assert job.get("metrics_path", "/metrics") == settings.metrics_path
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets and all(t.endswith(f":{settings.metrics_port}") for t in targets)
    # Trimming suffixes would turn tuist_runs_total into tuist_runs.
    assert not config["receivers"]["prometheus"].get("trim_metric_suffixes", False)


def test_exporters_keep_the_documented_names(config: dict[str, Any]) -> None:
    for name in ("prometheus", "prometheusremotewrite"):
        exporter = config["exporters"][name]
        assert exporter["add_metric_suffixes"] is False, name  # else counters gain _total
        assert "namespace" not in exporter, name  # else every tuist_* name gains a prefix
        strategy = exporter.get("translation_strategy", "UnderscoreEscapingWithoutSuffixes")
        assert strategy in ("UnderscoreEscapingWithoutSuffixes", "NoTranslation"), name
    assert config["exporters"]["prometheusremotewrite"]["endpoint"].endswith("/api/v1/write")


def test_no_port_clash_with_the_service_prometheus_or_alertmanager(config: dict[str, Any]) -> None:
    ports = _listen_ports(config)
    assert {4317, 4318, 8889, 8888, 13133} <= set(ports)
    settings = Settings()
    prometheus = yaml.safe_load((ROOT / "collector" / "prometheus.yml").read_text())
    others = {settings.metrics_port: "the service's /metrics"}
    for target in prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]:
        others[int(target.rsplit(":", 1)[1])] = "Alertmanager"
    for job in prometheus["scrape_configs"]:
        if job["job_name"] != "otel-collector":
            for sc in job["static_configs"]:
                for target in sc["targets"]:
                    others[int(target.rsplit(":", 1)[1])] = f"Prometheus job {job['job_name']}"
    try:
        from service.settings import ServiceSettings

        others[ServiceSettings().port] = "the service's HTTP port"
    except ImportError:  # the reference service is optional here
        pass
    remote = config["exporters"]["prometheusremotewrite"]["endpoint"]
    others[int(re.search(r":(\d+)/", remote).group(1))] = "Prometheus (remote write)"  # type: ignore[union-attr]
    clashes = {port: (ports[port], others[port]) for port in set(ports) & set(others)}
    assert clashes == {}


def test_collector_own_metrics_are_what_prometheus_yml_scrapes(config: dict[str, Any]) -> None:
    prometheus = yaml.safe_load((ROOT / "collector" / "prometheus.yml").read_text())
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "otel-collector")
    target_port = int(job["static_configs"][0]["targets"][0].rsplit(":", 1)[1])
    telemetry_ports = [int(e.rsplit(":", 1)[1]) for _, e in _endpoints(config["service"]["telemetry"])]
    assert telemetry_ports == [target_port]


def test_comments_explain_each_part_and_name_the_collector_version() -> None:
    text = CONFIG_PATH.read_text()
    assert re.search(r"Written for otelcol-contrib v\d+\.\d+\.\d+", text)
    config = yaml.safe_load(text)
    lines = text.splitlines()
    for section in ("extensions", "receivers", "processors", "exporters"):
        for name in config[section]:
            index = next(i for i, line in enumerate(lines) if line == f"  {name}:")
            assert lines[index - 1].lstrip().startswith("#"), f"{section}.{name} has no comment above it"
    assert text.count("Production:") >= 5
