"""collector/dashboards: generated, current-schema Grafana dashboards whose queries are valid and name only
metrics the project exports.

- the committed JSON matches what ``collector/dashboards/generate.py`` writes;
- ``tsc --noEmit`` type-checks every dashboard against ``@grafana/schema`` (installed by ``npm ci`` in
  collector/typecheck): the generator writes the dashboards as TypeScript literals into a temporary copy of the
  type-check project (nothing generated is committed); it rejects a dashboard with a deprecated ``graph`` panel
  or a misspelt option;
- every panel query parses (promtool, the real PromQL parser) and names only metrics from the catalogue or a
  live scrape of ``python -m telemetry simulate``.

The helpers here (``metric_names``, ``exported_names``, ``panel_queries``, ``grafana_to_promql``) are shared by
the rules and end-to-end tests.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from telemetry.catalogue import CATALOGUE
from telemetry.testing import parse_exposition, wait_for
from tests.conftest import free_port, require, require_binary

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "collector" / "dashboards"
TYPECHECK = ROOT / "collector" / "typecheck"
GENERATOR = DASHBOARDS / "generate.py"
BOARDS = sorted(DASHBOARDS.glob("*.json"))

# --- PromQL helpers -----------------------------------------------------------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
             "unless", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions, keywords, label
    names (inside ``{}`` or grouping clauses), strings, durations or numbers."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", s):
        token = match.group()
        if token.lower() in _KEYWORDS or s[match.end():].lstrip().startswith("("):
            continue
        names.add(token)
    return names


def grafana_to_promql(expr: str, rate_interval: str = "1m") -> str:
    """A panel query as Grafana sends it with every variable at "All" (``.*``)."""
    return (expr.replace("$__rate_interval", rate_interval).replace("$job", ".*").replace("$instance", ".*"))


def panel_queries() -> Iterator[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) for every panel target."""
    for path in BOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                yield path.name, panel["title"], target["expr"]


def recording_rules() -> dict[str, set[str]]:
    """Recorded name -> the metric names its expression reads, from collector/rules/*.yml."""
    recorded: dict[str, set[str]] = {}
    for path in sorted((ROOT / "collector" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    recorded.setdefault(rule["record"], set()).update(metric_names(rule["expr"]))
    return recorded


def expand(names: set[str]) -> set[str]:
    """``names`` with every recorded name replaced by the exported names it is computed from."""
    recorded = recording_rules()
    out: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in recorded:
            todo.extend(recorded[name] - out)
        else:
            out.add(name)
    return out


def scrape_names(text: str) -> set[str]:
    return {sample.name for sample in parse_exposition(text)}


@functools.lru_cache(maxsize=1)
def exported_names() -> set[str]:
    """Every sample name the project exports: the catalogue's, plus whatever a live /metrics shows beside them
    (runtime metrics, target_info), scraped from ``python -m telemetry simulate``."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "telemetry", "simulate", "--host", "127.0.0.1",
                             "--port", str(port), "--duration", "60", "--interval", "0.1"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def runs_served() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                text: str = response.read().decode()
            return text if "tuist_runs_total{" in text else ""

        text = wait_for(runs_served, 20, interval=0.1, what="simulate to serve runs", ignore=(OSError,))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    catalogue = {n for s in CATALOGUE for n in s.sample_names}
    live = scrape_names(text)
    assert {"process_cpu_time_seconds_total", "process_memory_usage_bytes"} <= live  # runtime metrics are on
    return catalogue | live


def test_metric_names_parser() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, name) (rate(tuist_runs_duration_milliseconds_bucket'
            '{job=~"$job", status="1"}[5m]))) / on (job) group_left(instance) max(up offset 5m) '
            'or label_replace(vector(0), "operation", "get_object_size", "", "") > bool 1e3')
    assert metric_names(expr) == {"tuist_runs_duration_milliseconds_bucket", "up"}
    assert metric_names("job:http_requests:error_ratio_rate5m > 0.05 and on (job) x:y:z > 0.05") == {
        "job:http_requests:error_ratio_rate5m", "x:y:z"}


# --- generated files ----------------------------------------------------------------------------------------


def test_committed_dashboards_match_the_generator() -> None:
    result = subprocess.run([sys.executable, str(GENERATOR), "--check"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(BOARDS) == 7


def _boards() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in BOARDS]


def test_dashboards_use_the_current_schema_and_panels() -> None:
    uids = set()
    for board in _boards():
        assert board["schemaVersion"] >= 39, board["title"]
        uids.add(board["uid"])
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), board["title"]
        kinds = {p["type"] for p in board["panels"]}
        assert kinds <= {"timeseries", "stat"} and "timeseries" in kinds, board["title"]
        cells: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            g = panel["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
            area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not area & cells, f"{board['title']}: {panel['title']} overlaps another panel"
            cells |= area
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert 'job=~"$job"' in target["expr"] and 'instance=~"$instance"' in target["expr"], target
    assert len(uids) == len(BOARDS)


def test_dashboards_have_datasource_job_and_instance_variables() -> None:
    for board in _boards():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        assert variables["job"]["query"] == "label_values(up, job)"
        assert variables["instance"]["query"] == 'label_values(up{job=~"$job"}, instance)'
        assert variables["instance"]["includeAll"] and variables["instance"]["allValue"] == ".*"


def test_every_domain_and_catalogue_family_is_on_a_dashboard() -> None:
    queried = expand(set().union(*(metric_names(expr) for _, _, expr in panel_queries())))
    missing = [s.name for s in CATALOGUE if not set(s.sample_names) & queried]
    assert missing == []
    titles = {b["title"] for b in _boards()}
    for word in ("Runs", "cache", "storage", "HTTP client", "Database pool", "Inbound HTTP", "Runtime"):
        assert any(word in t for t in titles), word


def test_quantiles_are_taken_over_summed_bucket_rates() -> None:
    for _, title, expr in panel_queries():
        for match in re.finditer(r"histogram_quantile\(([^,]+), (.{0,40})", expr):
            assert match.group(2).startswith("sum by (le"), (title, expr)


# --- the queries: valid PromQL, exported metrics --------------------------------------------------------------


def test_every_panel_query_names_only_exported_metrics() -> None:
    """Directly, or through a recording rule of collector/rules whose own inputs are exported."""
    exported = exported_names()
    recorded = recording_rules()
    count = 0
    for board, title, expr in panel_queries():
        names = metric_names(expr)
        assert names, (board, title, expr)
        assert names <= exported | set(recorded), f"{board} / {title}: {sorted(names - exported - set(recorded))}"
        assert expand(names) <= exported, f"{board} / {title}: {sorted(expand(names) - exported)}"
        count += 1
    assert count >= 60


def test_storage_panels_read_per_instance_sums() -> None:
    """Storage series are per object (object_key, upload_id, ...): a rate over them is mostly 0, so the storage
    dashboard reads the sums recorded in rules/storage.yml, one per catalogue storage family."""
    storage = {s.name for s in CATALOGUE if s.domain == "storage"}
    recorded = recording_rules()
    for board, title, expr in panel_queries():
        direct = {n for n in metric_names(expr) if n.removesuffix("_bucket") in storage}
        assert not direct, f"{board} / {title} rates per-object series {direct}"
        if board == "storage.json":
            assert all(n in recorded and n.endswith(":sum") for n in metric_names(expr)), title
    summed = {n for name, inputs in recorded.items() if name.endswith(":sum") for n in inputs}
    assert {n.removesuffix("_bucket") for n in summed} == storage


def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query (as Grafana sends it) as a recording rule's expression."""
    promtool = require_binary("promtool")
    rules = [{"record": f"dashboard:query:{i}", "expr": grafana_to_promql(expr)}
             for i, (_, _, expr) in enumerate(panel_queries())]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
    # And promtool does reject a broken one, so the check above means something.
    path.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": [
        {"record": "r", "expr": "sum by (le (rate(x[1m]))"}]}]}))
    bad = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1


# --- TypeScript: @grafana/schema -------------------------------------------------------------------------------


def _tsc() -> Path:
    require_binary("node")
    tsc = TYPECHECK / "node_modules" / "typescript" / "bin" / "tsc"
    schema = TYPECHECK / "node_modules" / "@grafana" / "schema" / "package.json"
    require(tsc.exists() and schema.exists(), "run `npm ci` in collector/typecheck (make dashboard-deps)")
    return tsc


def _run_tsc(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["node", str(_tsc()), "--noEmit", "-p", str(project)], capture_output=True, text=True,
                          timeout=180, env={**os.environ, "NO_COLOR": "1"})


def test_installed_versions_are_the_locked_ones() -> None:
    _tsc()
    lock = json.loads((TYPECHECK / "package-lock.json").read_text())
    for name in ("@grafana/schema", "typescript"):
        installed = json.loads((TYPECHECK / "node_modules" / name / "package.json").read_text())["version"]
        assert installed == lock["packages"][f"node_modules/{name}"]["version"], name


def _typecheck_project(tmp_path: Path) -> Path:
    """collector/typecheck's sources and installed packages, with the generator's TypeScript beside them."""
    _tsc()
    for name in ("types.ts", "tsconfig.json"):
        shutil.copy(TYPECHECK / name, tmp_path / name)
    (tmp_path / "node_modules").symlink_to(TYPECHECK / "node_modules")
    result = subprocess.run([sys.executable, str(GENERATOR), "--typescript", str(tmp_path / "dashboards.gen.ts")],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return tmp_path


def test_generated_typescript_is_not_committed() -> None:
    tracked = subprocess.run(["git", "ls-files", "collector/typecheck"], cwd=ROOT, capture_output=True, text=True,
                             timeout=30, check=True).stdout.split()
    assert "collector/typecheck/dashboards.gen.ts" not in tracked
    ignored = subprocess.run(["git", "check-ignore", "-q", "collector/typecheck/dashboards.gen.ts"], cwd=ROOT,
                             timeout=30)
    assert ignored.returncode == 0, "collector/typecheck/dashboards.gen.ts is not in .gitignore"


def test_dashboards_type_check_against_grafana_schema(tmp_path: Path) -> None:
    project = _typecheck_project(tmp_path)
    source = (project / "dashboards.gen.ts").read_text()
    assert source.count(": CheckedDashboard = {") == len(BOARDS)
    result = _run_tsc(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_type_check_rejects_a_graph_panel_and_a_misspelt_option(tmp_path: Path) -> None:
    project = _typecheck_project(tmp_path)
    source = (project / "dashboards.gen.ts").read_text()
    broken = (source.replace('"type": "timeseries"', '"type": "graph"', 1)
              .replace('"colorMode": "value"', '"colorMode": "valu"', 1)
              .replace('"showPoints": "never"', '"showPoints": "never", "pointRadius": 2', 1))
    assert broken.count('"graph"') == 1
    (tmp_path / "dashboards.gen.ts").write_text(broken)
    result = _run_tsc(tmp_path)
    assert result.returncode != 0
    errors = [line for line in result.stdout.splitlines() if "error TS" in line]
    assert len(errors) == 3, result.stdout
    assert any('"graph"' in e for e in errors)
    assert any('"valu"' in e for e in errors)
    assert any("pointRadius" in e for e in errors)
