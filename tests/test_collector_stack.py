"""``make stack`` (collector/stack.py): starts the real Prometheus and Alertmanager on loopback against a
service, prints the URLs, and stops both by PID on Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from telemetry.testing import wait_for
from tests.conftest import free_port, port_open, require_binary
from tests.test_collector_e2e import stop
from tests.test_prometheus import NOT_YET

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stack_starts_prometheus_and_alertmanager_and_stops_them_on_ctrl_c(tmp_path: Path) -> None:
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    metrics_port, prom_port, am_port, hook_port = free_port(), free_port(), free_port(), free_port()
    simulate = subprocess.Popen([sys.executable, "-m", "telemetry", "simulate", "--host", "127.0.0.1",
                                 "--port", str(metrics_port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    # The stack notes a target that does not answer yet; start it once the simulator listens.
    wait_for(lambda: port_open("127.0.0.1", metrics_port), 30, what="the simulator to listen")
    stack = subprocess.Popen([sys.executable, "collector/stack.py", "--target", f"127.0.0.1:{metrics_port}",
                              "--prometheus-port", str(prom_port), "--alertmanager-port", str(am_port),
                              "--webhook-port", str(hook_port), "--data-dir", str(tmp_path)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pids: list[int] = []
    try:
        assert stack.stdout is not None
        lines = []
        for line in stack.stdout:
            lines.append(line)
            if line.startswith("pids:"):
                break
        out = "".join(lines)
        assert f"Prometheus:   http://127.0.0.1:{prom_port}" in out, out
        assert f"Alertmanager: http://127.0.0.1:{am_port}" in out
        assert f"Scraping:     127.0.0.1:{metrics_port}\n" in out
        assert "Collector:    not running, its job is left out" in out
        pages = dict(re.findall(r"^  (targets|alerts): +(\S+)$", out, re.MULTILINE))
        assert set(pages) == {"targets", "alerts"}, out
        for url in pages.values():  # the UI pages this Prometheus serves (2.42 from Debian: /classic/...)
            assert url.startswith(f"http://127.0.0.1:{prom_port}/"), url
            with urllib.request.urlopen(url, timeout=5) as r:
                assert r.status == 200 and "text/html" in r.headers["Content-Type"], url
        pids = [int(pid) for pid in re.findall(r"(?:prometheus|alertmanager) (\d+)", lines[-1])]
        assert len(pids) == 2 and all(_alive(p) for p in pids)

        def target_up() -> list[dict[str, object]]:
            with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/targets", timeout=2) as r:
                targets = json.loads(r.read())["data"]["activeTargets"]
            return [t for t in targets if t["health"] == "up"]

        up = wait_for(target_up, 60, what="the service target to be up", interval=0.5, ignore=NOT_YET)
        assert [t["labels"]["job"] for t in up] == ["tuist-service"]  # type: ignore[index]
        with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/rules", timeout=2) as r:
            groups = json.loads(r.read())["data"]["groups"]
        assert sum(len(g["rules"]) for g in groups) >= 30
        with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/alertmanagers", timeout=2) as r:
            managers = json.loads(r.read())["data"]["activeAlertmanagers"]
        assert [m["url"] for m in managers] == [f"http://127.0.0.1:{am_port}/api/v2/alerts"]

        stack.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert stack.wait(30) == 0
        assert "stack: stopped" in stack.stdout.read()
        wait_for(lambda: not any(_alive(p) for p in pids), 10, what="Prometheus and Alertmanager to exit")
    finally:
        stop(stack)
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        stop(simulate)
    assert (tmp_path / "prometheus.yml").exists() and (tmp_path / "alertmanager.yml").exists()


def test_stack_refuses_a_busy_port(tmp_path: Path) -> None:
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run([sys.executable, "collector/stack.py", "--prometheus-port", str(port),
                                 "--alertmanager-port", str(free_port()), "--webhook-port", str(free_port()),
                                 "--data-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"port(s) [{port}] already in use" in result.stderr
    assert time.monotonic() - started < 10
