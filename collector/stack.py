"""``make stack``: Prometheus and Alertmanager (the installed Debian binaries) on loopback, loaded with
collector/prometheus.yml, the rules and collector/alertmanager.yml, scraping the service that ``make run``
starts, plus a small webhook receiver that prints the alerts Alertmanager sends. Ctrl-C stops everything.

The shipped configs are used as they are, except where an option asks otherwise (ports, the scrape target)
and that the ``otel-collector`` scrape job is left out while nothing listens on its port (so a missing
collector does not show as a down target). The rendered copies and the data live in var/stack/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
COLLECTOR_JOB = "otel-collector"
SERVICE_JOB = "tuist-service"


def _port_of(target: str) -> int:
    return int(target.rsplit(":", 1)[1])


def _listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def render_prometheus(out: Path, *, target: str, alertmanager_port: int, keep_collector: bool) -> Path:
    config = yaml.safe_load((HERE / "prometheus.yml").read_text())
    config["rule_files"] = [str(HERE / pattern) for pattern in config["rule_files"]]
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{alertmanager_port}"]
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] == SERVICE_JOB:
            job["static_configs"] = [{"targets": [target]}]
        if job["job_name"] == COLLECTOR_JOB and not keep_collector:
            continue
        jobs.append(job)
    config["scrape_configs"] = jobs
    path = out / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def render_alertmanager(out: Path, *, webhook_port: int) -> Path:
    config = yaml.safe_load((HERE / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"http://127.0.0.1:{webhook_port}{urlsplit(hook['url']).path}"
    path = out / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _default_webhook_port() -> int:
    config = yaml.safe_load((HERE / "alertmanager.yml").read_text())
    url = config["receivers"][0]["webhook_configs"][0]["url"]
    return urlsplit(url).port or 80


def start_webhook(port: int) -> ThreadingHTTPServer:
    """Prints one line per alert Alertmanager delivers."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body: dict[str, Any] = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            for alert in body.get("alerts", []):
                labels = alert.get("labels", {})
                print(f"webhook {self.path}: [{alert.get('status')}] {labels.get('alertname')} "
                      f"({labels.get('severity', '-')}) {alert.get('annotations', {}).get('summary', '')}",
                      flush=True)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name="webhook", daemon=True).start()
    return server


def _wait_ready(url: str, proc: subprocess.Popen[bytes], name: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"stack: {name} exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"stack: {name} not ready after {timeout:.0f} s; see {log}")


def ui_page(base: str, page: str) -> str:
    """The URL of a Prometheus web UI page that answers: ``/targets`` on a Prometheus with its React UI,
    ``/classic/targets`` on builds without it (Debian's 2.42 answers 404 on ``/targets``)."""
    for url in (f"{base}/{page}", f"{base}/classic/{page}"):
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return url
        except OSError:
            continue
    return f"{base}/api/v1/{page}"  # the JSON API serves both on every 2.x release


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    prometheus_yml = yaml.safe_load((HERE / "prometheus.yml").read_text())
    service = next(j for j in prometheus_yml["scrape_configs"] if j["job_name"] == SERVICE_JOB)
    alertmanager = prometheus_yml["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default=service["static_configs"][0]["targets"][0],
                        help="the service's /metrics address (default: %(default)s, what `make run` serves)")
    parser.add_argument("--prometheus-port", type=int, default=9090)
    parser.add_argument("--alertmanager-port", type=int, default=_port_of(alertmanager))
    parser.add_argument("--webhook-port", type=int, default=_default_webhook_port())
    parser.add_argument("--data-dir", type=Path, default=ROOT / "var" / "stack")
    args = parser.parse_args(argv)

    binaries = {"prometheus": shutil.which("prometheus"),
                "alertmanager": shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")}
    missing = [name for name, path in binaries.items() if path is None]
    if missing:
        print(f"stack: {', '.join(missing)} not installed (apt-get install prometheus prometheus-alertmanager)",
              file=sys.stderr)
        return 2
    busy = [p for p in (args.prometheus_port, args.alertmanager_port, args.webhook_port) if _listening(p)]
    if busy:
        print(f"stack: port(s) {busy} already in use on 127.0.0.1", file=sys.stderr)
        return 2

    data: Path = args.data_dir
    data.mkdir(parents=True, exist_ok=True)
    collector_port = _port_of(next((j["static_configs"][0]["targets"][0] for j in prometheus_yml["scrape_configs"]
                                    if j["job_name"] == COLLECTOR_JOB), "127.0.0.1:0"))
    keep_collector = collector_port > 0 and _listening(collector_port)
    prom_config = render_prometheus(data, target=args.target, alertmanager_port=args.alertmanager_port,
                                    keep_collector=keep_collector)
    am_config = render_alertmanager(data, webhook_port=args.webhook_port)

    webhook = start_webhook(args.webhook_port)
    procs: list[subprocess.Popen[bytes]] = []
    prometheus_url = f"http://127.0.0.1:{args.prometheus_port}"
    alertmanager_url = f"http://127.0.0.1:{args.alertmanager_port}"
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        am_log = data / "alertmanager.log"
        with am_log.open("ab") as log:
            procs.append(subprocess.Popen(
                [str(binaries["alertmanager"]), f"--config.file={am_config}", f"--storage.path={data / 'alertmanager'}",
                 f"--web.listen-address=127.0.0.1:{args.alertmanager_port}", "--cluster.listen-address=",
                 f"--web.external-url={alertmanager_url}"], stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))  # Ctrl-C reaches this script only; it stops them by PID
        prom_log = data / "prometheus.log"
        with prom_log.open("ab") as log:
            procs.append(subprocess.Popen(
                [str(binaries["prometheus"]), f"--config.file={prom_config}",
                 f"--storage.tsdb.path={data / 'prometheus'}", f"--web.listen-address=127.0.0.1:{args.prometheus_port}",
                 f"--web.external-url={prometheus_url}"], stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))
        _wait_ready(f"{alertmanager_url}/-/ready", procs[0], "Alertmanager", am_log)
        _wait_ready(f"{prometheus_url}/-/ready", procs[1], "Prometheus", prom_log)
        target_note = "" if _listening(_port_of(args.target), args.target.rsplit(":", 1)[0]) else \
            "   (nothing answers there yet: start the service with `make run`)"
        print(f"Prometheus:   {prometheus_url}\n"
              f"  targets:    {ui_page(prometheus_url, 'targets')}\n"
              f"  alerts:     {ui_page(prometheus_url, 'alerts')}\n"
              f"Alertmanager: {alertmanager_url}\n"
              f"Webhook:      http://127.0.0.1:{args.webhook_port}/alerts/<severity> (alerts are printed below)\n"
              f"Scraping:     {args.target}{target_note}\n"
              f"Collector:    {'scraped' if keep_collector else 'not running, its job is left out'}\n"
              f"Dashboards:   import collector/dashboards/*.json into Grafana with {prometheus_url} as data source\n"
              f"Data, logs:   {data}\n"
              f"pids:         prometheus {procs[1].pid}, alertmanager {procs[0].pid}; Ctrl-C stops both",
              flush=True)
        while not stopping.is_set():
            for proc, name in zip(procs, ("Alertmanager", "Prometheus"), strict=True):
                if proc.poll() is not None:
                    print(f"stack: {name} exited with {proc.returncode}", file=sys.stderr)
                    return 1
            stopping.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in reversed(procs):
            _stop(proc)
        webhook.shutdown()
        webhook.server_close()
    print("stack: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
