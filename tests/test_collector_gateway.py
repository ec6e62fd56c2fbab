"""The "many hosts" recipe: otel-collector.yaml as a gateway for many pushing processes (structure: no
collector binary can be installed here) and the "Many hosts" section of docs/deployment.md (its Python snippet
runs against a loopback receiver, its commands name real files and flags)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import require_binary
from .test_bounded_shutdown import Sink

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "deployment.md"


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "otel-collector.yaml").read_text())
    return loaded


def _type(name: str) -> str:
    return name.split("/", 1)[0]


def test_pushed_temporality_is_handled_between_the_limiter_and_batch(config: dict[str, Any]) -> None:
    processors = [_type(p) for p in config["service"]["pipelines"]["metrics"]["processors"]]
    assert processors == ["memory_limiter", "deltatocumulative", "batch"]
    # cumulative -> delta would leave both Prometheus exporters with data they drop or re-accumulate.
    assert not any(_type(p) == "cumulativetodelta" for p in config["processors"])
    d2c = config["processors"]["deltatocumulative"]
    # A stream forgotten by the processor should also be gone from the prometheus exporter, and not before.
    assert d2c["max_stale"] == config["exporters"]["prometheus"]["metric_expiration"]
    assert isinstance(d2c["max_streams"], int) and d2c["max_streams"] > 0


def test_otlp_reaches_the_exporters_through_one_pipeline_only(config: dict[str, Any]) -> None:
    """The same receiver in two metrics pipelines would deliver every pushed point twice."""
    pipelines = config["service"]["pipelines"]
    with_otlp = [name for name, p in pipelines.items() if _type(name) == "metrics" and "otlp" in p["receivers"]]
    assert with_otlp == ["metrics"]


def test_resource_becomes_job_instance_and_target_info_not_labels(config: dict[str, Any]) -> None:
    for name in ("prometheus", "prometheusremotewrite"):
        conversion = config["exporters"][name].get("resource_to_telemetry_conversion", {"enabled": False})
        assert conversion["enabled"] is False, name
        assert "resource_constant_labels" not in config["exporters"][name], name
    assert config["exporters"]["prometheusremotewrite"]["target_info"]["enabled"] is True


def _section() -> str:
    text = DOC.read_text()
    assert "\n## Many hosts\n" in text
    return text.split("\n## Many hosts\n", 1)[1].split("\n## ", 1)[0]


def test_the_doc_snippet_pushes_through_remote_write(tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.exporter.prometheus_remote_write", reason="the remote-write extra")
    from .test_remote_write import decode

    [snippet] = re.findall(r"```python\n(.*?)```", _section(), re.S)
    sink = Sink(204)
    try:
        code = snippet.replace("http://127.0.0.1:9090/api/v1/write", sink.url("/api/v1/write"))
        assert code != snippet
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TUIST_"))}
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr.decode()
        bodies = list(sink.bodies)
    finally:
        sink.close()
    runs = [(labels, value) for _, body in bodies for name, labels, value in decode(body)
            if name == "tuist_runs_total"]
    [(labels, value)] = runs
    assert value == 1 and labels["job"] == "tuist-service" and labels["name"] == "build"


def test_the_doc_commands_name_real_files_and_flags() -> None:
    section = _section()
    for path in re.findall(r"tests/test_\w+\.py", section):
        assert (ROOT / path).is_file(), path
    binary = require_binary("prometheus")
    help_text = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
    flags = set(re.findall(r"--[a-z][a-z0-9.-]+", help_text.stdout + help_text.stderr))
    used = set(re.findall(r"--[a-z][a-z0-9.-]+[a-z0-9]", section.split("### Try it", 1)[1].split("```sh", 2)[1]))
    assert used and used <= flags, used - flags
    assert "--web.enable-remote-write-receiver" in used
