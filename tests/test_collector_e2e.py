"""End to end: the reference service with traffic, a real Prometheus loaded with collector/prometheus.yml and the
rules, a real Alertmanager loaded with collector/alertmanager.yml, and a webhook receiver in this test.

The configs are the shipped files with only these changes, made on temporary copies:
- ports: the service, Prometheus and Alertmanager listen on free loopback ports; the webhook URLs point here;
- speed: scrape and evaluation intervals of 1 s (instead of 15 s), Alertmanager group_wait 0 s;
- the ``otel-collector`` scrape job is dropped (no collector binary can be installed here);
- HighErrorRatio's ``for: 5m`` becomes ``for: 5s`` — no evaluation setting shortens a ``for``, and a test
  cannot wait five minutes. Its thresholds and expression are unchanged.

Checks: every dashboard panel query (with Grafana's variables at "All") returns finite data from the real
Prometheus; the template variables' label_values() find the service; with no failures the error-ratio alert
is silent; restarting the service with SERVICE_FAILURE_RATE=0.5 makes it fire and reach the webhook through
the critical route, with its annotations rendered.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from telemetry.testing import wait_for
from tests.conftest import free_port, require, require_binary
from tests.test_collector_dashboards import grafana_to_promql, metric_names, panel_queries

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
COLLECTOR = ROOT / "collector"
JOB = "tuist-service"
RATE_INTERVAL = "1m"  # what Grafana's $__rate_interval is for a 15 s scrape interval (4 x 15 s)


def get_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Stop one process we started, by its PID: SIGTERM, then SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# --- webhook receiver ---------------------------------------------------------------------------------------


@dataclass
class Webhook:
    port: int
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def alerts(self, name: str, status: str = "firing") -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        return [(path, body, alert) for path, body in list(self.received) for alert in body["alerts"]
                if alert["labels"].get("alertname") == name and alert["status"] == status]


def start_webhook() -> tuple[Webhook, ThreadingHTTPServer]:
    hook = Webhook(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            hook.received.append((self.path, json.loads(body)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, name="webhook", daemon=True).start()
    return hook, server


# --- the stack ----------------------------------------------------------------------------------------------


@dataclass
class Stack:
    tmp: Path
    prometheus_url: str
    alertmanager_url: str
    webhook: Webhook
    service_port: int
    metrics_port: int
    service: subprocess.Popen[bytes] | None = None
    failure_rate: float = 0.0
    logs: list[Path] = field(default_factory=list)

    def start_service(self, failure_rate: float) -> None:
        if self.service is not None:
            stop(self.service)
        self.failure_rate = failure_rate
        log = self.tmp / f"service-{len(self.logs)}.log"
        self.logs.append(log)
        env = {
            **os.environ,
            "SERVICE_DATA_DIR": str(self.tmp / "service-data"),
            "SERVICE_FAILURE_RATE": str(failure_rate),
            # Analytics on, towards a closed loopback port: the dropped-events counters exist (at 0 or above).
            "TUIST_POSTHOG_API_KEY": "phc_e2e",
            "TUIST_POSTHOG_URL": f"http://127.0.0.1:{free_port()}",
            # A low label-set limit on one histogram, so the telemetry-health panel has overflow to show.
            "TUIST_METRICS_CARDINALITY_LIMITS": "tuist_runs_duration_milliseconds=2",
        }
        with log.open("wb") as out:
            self.service = subprocess.Popen(
                [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(self.service_port),
                 "--metrics-port", str(self.metrics_port)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_for(lambda: self._metrics_up(), 30, what="the service's /metrics", interval=0.5)

    def _metrics_up(self) -> bool:
        assert self.service is not None
        if self.service.poll() is not None:
            raise AssertionError(f"the service exited: {self.logs[-1].read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def query_range(self, expr: str, start: float, step: float = 1) -> list[dict[str, Any]]:
        """What Grafana asks for a panel: the query over a time range."""
        url = f"{self.prometheus_url}/api/v1/query_range?" + urllib.parse.urlencode(
            {"query": expr, "start": f"{start:.3f}", "end": f"{time.time():.3f}", "step": str(step)})
        body = get_json(url)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        body = get_json(url)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def firing(self, alert: str) -> list[dict[str, Any]]:
        alerts = get_json(f"{self.prometheus_url}/api/v1/alerts")["data"]["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == alert and a["state"] == "firing"]


def _prometheus_config(tmp: Path, metrics_port: int, alertmanager_port: int) -> Path:
    rules = tmp / "rules"
    shutil.copytree(COLLECTOR / "rules", rules, ignore=shutil.ignore_patterns("tests"))
    alerts = rules / "alerts.yml"
    doc = yaml.safe_load(alerts.read_text())
    changed = 0
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "HighErrorRatio":
                assert rule["for"] == "5m"
                rule["for"] = "5s"
                changed += 1
    assert changed == 1
    alerts.write_text(yaml.safe_dump(doc, sort_keys=False))

    config = yaml.safe_load((COLLECTOR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{alertmanager_port}"]
    config["rule_files"] = [str(rules / "*.yml")]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {JOB, "otel-collector"}
    jobs[JOB]["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    config["scrape_configs"] = [jobs[JOB]]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _alertmanager_config(tmp: Path, webhook_port: int) -> Path:
    config = yaml.safe_load((COLLECTOR / "alertmanager.yml").read_text())
    for route in [config["route"], *config["route"]["routes"]]:
        if "group_wait" in route:
            route["group_wait"] = "0s"
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            path = urllib.parse.urlsplit(hook["url"]).path
            hook["url"] = f"http://127.0.0.1:{webhook_port}{path}"
    out = tmp / "alertmanager.yml"
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = require_binary("prometheus")
    alertmanager = require_binary("prometheus-alertmanager")
    require((ROOT / "service" / "__main__.py").exists(), "the reference service (python -m service) is missing")
    tmp = tmp_path_factory.mktemp("stack")
    webhook, webhook_server = start_webhook()
    prom_port, am_port = free_port(), free_port()
    stack = Stack(tmp, f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}", webhook,
                  service_port=free_port(), metrics_port=free_port())
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with (tmp / "alertmanager.log").open("wb") as out:
            procs.append(subprocess.Popen(
                [alertmanager, f"--config.file={_alertmanager_config(tmp, webhook.port)}",
                 f"--storage.path={tmp / 'am-data'}", f"--web.listen-address=127.0.0.1:{am_port}",
                 "--cluster.listen-address="], stdout=out, stderr=subprocess.STDOUT))
        with (tmp / "prometheus.log").open("wb") as out:
            procs.append(subprocess.Popen(
                [prometheus, f"--config.file={_prometheus_config(tmp, stack.metrics_port, am_port)}",
                 f"--storage.tsdb.path={tmp / 'prom-data'}", f"--web.listen-address=127.0.0.1:{prom_port}",
                 f"--web.external-url={stack.prometheus_url}"],
                stdout=out, stderr=subprocess.STDOUT))
        wait_for(lambda: _ready(stack.alertmanager_url + "/-/ready"), 30, what="Alertmanager", interval=0.5)
        wait_for(lambda: _ready(stack.prometheus_url + "/-/ready"), 30, what="Prometheus", interval=0.5)
        stack.start_service(failure_rate=0.0)
        yield stack
    finally:
        if stack.service is not None:
            stop(stack.service)
        for proc in reversed(procs):
            stop(proc)
        webhook_server.shutdown()
        webhook_server.server_close()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _finite(result: list[dict[str, Any]]) -> bool:
    """At least one finite value: an instant vector's, or any point of a range query's series."""
    values = [v for r in result for v in ([r["value"]] if "value" in r else r["values"])]
    return any(math.isfinite(float(v[1])) for v in values)


# --- the tests ----------------------------------------------------------------------------------------------


def test_prometheus_loaded_every_rule_and_scrapes_the_service(stack: Stack) -> None:
    groups = get_json(f"{stack.prometheus_url}/api/v1/rules")["data"]["groups"]
    shipped = [r for p in sorted((COLLECTOR / "rules").glob("*.yml"))
               for g in yaml.safe_load(p.read_text())["groups"] for r in g["rules"]]
    loaded = [r for g in groups for r in g["rules"]]
    assert len(loaded) == len(shipped)
    assert all(r["health"] != "err" for r in loaded), [r for r in loaded if r["health"] == "err"]
    up = wait_for(lambda: stack.query(f'up{{job="{JOB}"}} == 1'), 30, what="the first scrape", interval=0.5)
    assert len(up) == 1


def test_template_variables_find_the_service(stack: Stack) -> None:
    """label_values(up, job) and label_values(up{job=~"$job"}, instance), as Grafana runs them."""
    jobs = get_json(f"{stack.prometheus_url}/api/v1/label/job/values?match[]=up")["data"]
    assert jobs == [JOB]
    match = urllib.parse.quote(f'up{{job=~"{JOB}"}}')
    instances = get_json(f"{stack.prometheus_url}/api/v1/label/instance/values?match[]={match}")["data"]
    assert instances == [f"127.0.0.1:{stack.metrics_port}"]


def test_forcing_5xx_fires_the_error_ratio_alert_and_it_reaches_the_webhook(stack: Stack) -> None:
    # Healthy traffic: requests flow, no 5xx, the alert stays silent.
    wait_for(lambda: _finite(stack.query("job:http_requests:rate5m > 0.05")), 60, what="inbound traffic",
             interval=0.5)
    time.sleep(6)  # longer than the test copy's for: 5s, so a wrongly firing alert would show by now
    assert stack.firing("HighErrorRatio") == []
    assert stack.webhook.alerts("HighErrorRatio") == []
    # The recorded ratio exists (0, not absent, before the first 5xx) and is below the threshold.
    ratio = stack.query("job:http_requests:error_ratio_rate5m")
    assert [r["metric"] for r in ratio] == [{"__name__": "job:http_requests:error_ratio_rate5m", "job": JOB}]
    assert float(ratio[0]["value"][1]) < 0.05, ratio

    stack.start_service(failure_rate=0.5)
    firing = wait_for(lambda: stack.firing("HighErrorRatio"), 90, what="HighErrorRatio to fire in Prometheus",
                      interval=0.5)
    assert firing[0]["labels"] == {"alertname": "HighErrorRatio", "job": JOB, "severity": "critical"}
    # Half of the /api requests fail; pages and health checks never do, so the ratio is between 5% and 50%.
    value = float(firing[0]["value"])
    assert 0.05 < value <= 0.5, value

    received = wait_for(lambda: stack.webhook.alerts("HighErrorRatio"), 60, what="the alert at the webhook",
                        interval=0.5)
    path, body, alert = received[0]
    assert path == "/alerts/critical"  # routed by severity
    assert body["receiver"] == "critical" and body["status"] == "firing"
    assert body["groupLabels"] == {"alertname": "HighErrorRatio", "job": JOB}
    # Prometheus adds its external labels to every alert it sends.
    external = yaml.safe_load((COLLECTOR / "prometheus.yml").read_text())["global"]["external_labels"]
    assert alert["labels"] == {"alertname": "HighErrorRatio", "job": JOB, "severity": "critical", **external}
    assert re.fullmatch(rf"{JOB}: \d+(\.\d+)?% of requests fail with 5xx", alert["annotations"]["summary"])
    assert alert["annotations"]["runbook"].startswith("Open the Inbound HTTP dashboard")
    assert alert["generatorURL"].startswith(f"{stack.prometheus_url}/graph?g0.expr=job%3Ahttp_requests%3Aerror_ratio")
    # Nothing reached the warning route for this alert.
    assert all(p == "/alerts/critical" for p, _, _ in received)


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    queries = list(panel_queries())
    assert len(queries) >= 60
    missing: list[tuple[str, str, str]] = list(queries)

    start = time.time() - 600  # the whole run, as a dashboard's time range would show it

    def all_have_data() -> bool:
        """Like a panel over the time since the test started: data if any point is a number (a quantile of an
        operation that did not run in a window is NaN there, and Grafana leaves a gap)."""
        nonlocal missing
        missing = [(board, title, expr) for board, title, expr in missing
                   if not _finite(stack.query_range(grafana_to_promql(expr, RATE_INTERVAL), start))]
        return not missing

    try:
        wait_for(all_have_data, 60, what="data for every panel query", interval=2)
    except AssertionError:
        # A histogram observed only before Prometheus's first scrape (an HTTP connection opened at startup and
        # reused ever after) starts at its final value, so rate() never sees it grow. A restart resets it, and
        # rate() counts the reset: restart once (the alert test above already did, when run before this one).
        assert stack.service is not None
        stack.start_service(failure_rate=stack.failure_rate)
        try:
            wait_for(all_have_data, 60, what="data for every panel query after a restart", interval=2)
        except AssertionError:
            raise AssertionError("panel queries without data:\n" + "\n".join(
                f"  {b} / {t}: {e}" for b, t, e in missing)) from None
    # The names the queries use are all series in this Prometheus (not just syntactically fine).
    stored = set(get_json(f"{stack.prometheus_url}/api/v1/label/__name__/values")["data"])
    assert set().union(*(metric_names(e) for _, _, e in queries)) <= stored
