"""collector/prometheus.yml, rules and alertmanager.yml, checked with the real promtool and amtool.

promtool checks the config and rule syntax and runs the rule unit tests; amtool checks the Alertmanager config
and its routing. Beside the tools: every alert has a firing and a silent unit test, the annotations the
runbook needs, and every metric the rules read is one the project exports (from the catalogue and a live
scrape), so a renamed metric cannot leave an alert that never fires.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_binary
from tests.test_collector_dashboards import exported_names, metric_names

ROOT = Path(__file__).resolve().parent.parent
COLLECTOR = ROOT / "collector"
RULES = sorted((COLLECTOR / "rules").glob("*.yml"))
RULE_TESTS = sorted((COLLECTOR / "rules" / "tests").glob("*.yml"))
SEVERITIES = {"critical", "warning"}
# Series Prometheus itself writes for every scrape target; not a metric any exporter exposes.
PROMETHEUS_SERIES = {"up"}


def _run(*argv: str, cwd: Path = COLLECTOR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def _rules() -> list[dict[str, Any]]:
    return [rule for path in RULES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


def _alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in _rules() if "alert" in r}


def test_promtool_check_config_includes_the_rule_files() -> None:
    promtool = require_binary("promtool")
    result = _run(promtool, "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    # The config names the rule files by glob; every file must have been checked with it.
    for path in RULES:
        assert f"Checking {path.relative_to(COLLECTOR)}" in result.stdout
    counts = [int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", result.stdout)]
    assert sum(counts) == len(_rules())


def test_promtool_check_rules() -> None:
    promtool = require_binary("promtool")
    result = _run(promtool, "check", "rules", *(str(p) for p in RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULES)


def test_promtool_rule_unit_tests_pass() -> None:
    promtool = require_binary("promtool")
    result = _run(promtool, "test", "rules", *(str(p) for p in RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and "FAILED" not in result.stdout


def test_the_unit_tests_catch_a_broken_threshold(tmp_path: Path) -> None:
    """The rule tests have teeth: raising the error-ratio threshold to 50% makes its firing case fail."""
    promtool = require_binary("promtool")
    shutil.copytree(COLLECTOR / "rules", tmp_path / "rules")
    alerts = tmp_path / "rules" / "alerts.yml"
    text = alerts.read_text()
    assert text.count("job:http_requests:error_ratio_rate5m > 0.05") == 1
    alerts.write_text(text.replace("job:http_requests:error_ratio_rate5m > 0.05",
                                   "job:http_requests:error_ratio_rate5m > 0.5"))
    result = _run(promtool, "test", "rules", str(tmp_path / "rules" / "tests" / "alerts.test.yml"), cwd=tmp_path)
    assert result.returncode == 1
    report = result.stdout + result.stderr
    assert report.count("FAILED") == 1
    assert "name: HighErrorRatio fires at 10% 5xx" in report
    assert "got:[]" in report


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = set(_alerts())
    assert len(alerts) >= 8
    assert alerts - firing == set(), "alerts without a test where they fire"
    assert alerts - silent == set(), "alerts without a test where they stay silent"
    assert (firing | silent) - alerts == set(), "tests for alerts that do not exist"


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    for name, rule in _alerts().items():
        assert rule["labels"]["severity"] in SEVERITIES, name
        for key in ("summary", "description", "runbook"):
            assert len(rule["annotations"].get(key, "")) > 20, f"{name}: {key}"


def test_the_issue_s_alerts_are_all_there() -> None:
    alerts = _alerts()
    exprs = {name: rule["expr"] for name, rule in alerts.items()}
    recorded = {r["record"]: r["expr"] for r in _rules() if "record" in r}
    # Error ratio: 5xx over all, by rate — a ratio, not a rate.
    ratio = " ".join(recorded["job:http_requests:error_ratio_rate5m"].split())
    assert ratio == ('( sum by (job) (rate(http_requests_total{status=~"5.."}[5m])) or '
                     'sum by (job) (rate(http_requests_total[5m])) * 0 ) / '
                     'sum by (job) (rate(http_requests_total[5m]))'), ratio
    assert "job:http_requests:error_ratio_rate5m > 0.05" in exprs["HighErrorRatio"]
    # p99 from summed bucket rates.
    assert recorded["job:http_request_duration_seconds:p99_rate5m"] == (
        "histogram_quantile(0.99, sum by (job, le) (rate(http_request_duration_seconds_bucket[5m])))")
    assert exprs["ServiceDown"].startswith("up{") and exprs["ServiceDown"].endswith("== 0")
    assert "tuist_repo_pool_checkout_queue_length" in exprs["DatabasePoolStarved"]
    assert alerts["DatabasePoolStarved"]["for"] == "5m"
    assert "tuist_authentication_token_refresh_error_total" in exprs["TokenRefreshErrorSpike"]
    assert "hit_ratio" in exprs["CacheHitRatioLow"]
    assert "tuist_storage" in exprs["StorageOperationSlow"]
    assert "tuist_analytics_events_dropped_total" in exprs["AnalyticsEventsDropped"]


def test_rules_read_only_metrics_the_project_exports(exported: set[str]) -> None:
    recorded = {r["record"] for r in _rules() if "record" in r}
    for rule in _rules():
        unknown = metric_names(rule["expr"]) - exported - recorded - PROMETHEUS_SERIES
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: {unknown}"
    # Every storage operation of the catalogue has its latency recording rule.
    from telemetry.catalogue import STORAGE_OPERATIONS

    operations = {r["labels"]["operation"] for r in _rules()
                  if r.get("record") == "job_operation:tuist_storage_duration_milliseconds:p95_rate5m"}
    assert operations == set(STORAGE_OPERATIONS)


def test_rules_select_jobs_that_prometheus_yml_scrapes() -> None:
    config = yaml.safe_load((COLLECTOR / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    for rule in _rules():
        for job in re.findall(r'job="([^"]+)"', rule["expr"]):
            assert job in jobs, rule


def test_prometheus_yml_follows_the_tuist_doc() -> None:
    config = yaml.safe_load((COLLECTOR / "prometheus.yml").read_text())
    assert config["global"]["scrape_interval"] == "15s"  # the doc: below 10,000 s, 15 s recommended
    from telemetry.config import Settings

    service = next(j for j in config["scrape_configs"] if j["job_name"] == "tuist-service")
    assert service["static_configs"][0]["targets"] == [f"127.0.0.1:{Settings().metrics_port}"]
    assert service.get("metrics_path", "/metrics") == Settings().metrics_path
    assert config["rule_files"] == ["rules/*.yml"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9093"]


def test_amtool_check_config() -> None:
    amtool = require_binary("amtool")
    result = _run(amtool, "check-config", "alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(("labels", "receiver"), [
    (("severity=critical", "alertname=ServiceDown"), "critical"),
    (("severity=warning", "alertname=HighLatencyP99"), "warning"),
    (("alertname=Unlabelled",), "warning"),
])
def test_alertmanager_routes_by_severity(labels: tuple[str, ...], receiver: str) -> None:
    amtool = require_binary("amtool")
    result = _run(amtool, "config", "routes", "test", "--config.file=alertmanager.yml", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_every_alert_severity_has_a_route() -> None:
    config = yaml.safe_load((COLLECTOR / "alertmanager.yml").read_text())
    routed = {m.split("=", 1)[1].strip('"') for route in config["route"]["routes"] for m in route["matchers"]}
    assert {rule["labels"]["severity"] for rule in _alerts().values()} <= routed
    receivers = {r["name"] for r in config["receivers"]}
    assert {route["receiver"] for route in config["route"]["routes"]} | {config["route"]["receiver"]} <= receivers


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return exported_names()


def test_every_alert_has_a_runbook_in_the_deployment_doc() -> None:
    doc = (ROOT / "docs" / "deployment.md").read_text()
    for name, rule in _alerts().items():
        assert f"\n### {name}\n" in doc, name
        assert f"| {name} |" in doc, name  # and a row in the alerts table
        assert rule["labels"]["severity"] in doc.split(f"| {name} |", 1)[1].split("\n", 1)[0], name
