"""Multi-process mode under real servers: gunicorn (uvicorn and sync workers), ``uvicorn --workers``,
``python -m telemetry serve`` and ``python -m service --workers``. Every server runs in its own process group on
loopback ports and is stopped by that group; each test counts requests over fresh connections and reads
/metrics from whichever worker answers."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from telemetry.catalogue import PROCESS_THREADS, RUNTIME
from telemetry.testing import WaitTimeout, parse_exposition, sample_total, wait_for
from tests.conftest import free_port, port_open
from tests.service_process import issue_token
from tests.test_prometheus import NOT_YET, prometheus_scraping
from tests.test_views import query

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 2000
RUNS = "tuist_runs_total"


class Group:
    """A server started in its own process group (its workers too), stopped by that group."""

    def __init__(self, argv: Sequence[str], tmp: Path, env: Mapping[str, str], metrics_port: int = 0) -> None:
        self.metrics_port = metrics_port or free_port()
        full = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TUIST_", "SERVICE_"))}
        full.update({"TUIST_METRICS_HOST": "127.0.0.1", "TUIST_METRICS_PORT": str(self.metrics_port),
                     "TUIST_METRICS_MULTIPROCESS_REFRESH_SECONDS": "0.2", **env})
        self.log = tmp / "server.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(list(argv), cwd=ROOT, env=full, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.metrics = f"127.0.0.1:{self.metrics_port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def wait(self, host_port: str, path: str, timeout: float = 30) -> None:
        def answers() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode}:\n{self.output()}")
            return get(host_port, path)[0] == 200

        try:
            wait_for(answers, timeout, interval=0.1, what=f"{host_port}{path} to answer", ignore=(OSError,))
        except WaitTimeout as exc:
            raise AssertionError(f"{exc}:\n{self.output()}") from None

    def stop(self) -> int | None:
        pgid = self.process.pid  # start_new_session: the group's id is the leader's pid
        with suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(20)
        with suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)  # any worker left behind
        self.process.wait(5)
        return self.process.returncode


@contextmanager
def running(tmp: Path, argv: Sequence[str], app: str | None, env: Mapping[str, str] | None = None) -> Iterator[Group]:
    group = Group(argv, tmp, env or {})
    try:
        if app is not None:
            group.wait(app, "/pid")
        group.wait(group.metrics, "/metrics")
        yield group
    finally:
        group.stop()


def get(host_port: str, path: str, method: str = "GET", body: bytes | None = None,
        headers: Mapping[str, str] | None = None) -> tuple[int, str]:
    """One request over a fresh connection (``Connection: close``)."""
    host, port = host_port.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Connection": "close", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def load(host_port: str, requests: int = REQUESTS, threads: int = 16, pause: float = 0.0) -> tuple[int, int]:
    """``requests`` GET /run over fresh connections from a thread pool: (responses with 200, the others)."""
    def batch(n: int) -> tuple[int, int]:
        ok = failed = 0
        for _ in range(n):
            try:
                status, _ = get(host_port, "/run")
                ok, failed = (ok + 1, failed) if status == 200 else (ok, failed + 1)
            except OSError:
                failed += 1
            if pause:
                time.sleep(pause)
        return ok, failed

    sizes = [requests // threads + (1 if i < requests % threads else 0) for i in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(batch, sizes))
    return sum(r[0] for r in results), sum(r[1] for r in results)


def scrapes(group: Group, times: int = 8) -> list[str]:
    """/metrics ``times`` over fresh connections, so the kernel hands them to different workers."""
    out = []
    for _ in range(times):
        status, text = get(group.metrics, "/metrics")
        assert status == 200, text
        out.append(text)
    return out


def assert_every_scrape(group: Group, runs: float, requests: float | None = None) -> None:
    for text in scrapes(group):
        assert sample_total(text, RUNS) == runs, text
        if requests is not None:
            assert sample_total(text, "http_requests_total", route="/run", status="200") == requests


# The README's commands ("Running with several workers"), as the tests run them (``python -m`` of this venv).
GUNICORN_ASGI = ("gunicorn -c python:telemetry.gunicorn -w 4 -k uvicorn.workers.UvicornWorker -b 127.0.0.1:{port} "
                 "tests.mp_app:app")
GUNICORN_SYNC = "gunicorn -c python:telemetry.gunicorn -w 4 -b 127.0.0.1:{port} tests.mp_app:wsgi"
UVICORN = "uvicorn tests.mp_app:app --workers 4 --host 127.0.0.1 --port {port}"
SERVE = "telemetry serve --dir {dir} --host 127.0.0.1 --port {port}"


def command(template: str, **values: object) -> list[str]:
    return [sys.executable, "-m", *template.format(**values).split()]


def test_readme_shows_the_commands_these_tests_run() -> None:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Running with several workers"):]
    section = section[:section.index("\n## ")].replace("\\\n  ", "")
    for template in (GUNICORN_ASGI, GUNICORN_SYNC, UVICORN):
        assert template.format(port=8000) in section, template
    assert "python -m " + SERVE.format(dir="/tmp/metrics", port=9091) in section
    assert "python -m service --workers 4" in section


# --- the three servers: 2,000 requests, the exact count from whichever worker answers -----------------------

def test_gunicorn_uvicorn_workers_count_every_request(tmp_path: Path) -> None:
    port = free_port()
    # TUIST_METRICS_MULTIPROCESS_DIR unset: telemetry.gunicorn's when_ready makes one for the workers.
    argv = command(GUNICORN_ASGI, port=port)
    with running(tmp_path, argv, f"127.0.0.1:{port}") as group:
        ok, failed = load(f"127.0.0.1:{port}")
        assert (ok, failed) == (REQUESTS, 0)
        assert_every_scrape(group, REQUESTS, REQUESTS)

        def four_pids() -> str | None:  # every worker's own runtime series, labelled with its pid
            text = scrapes(group, 1)[0]
            return text if len({labels["pid"] for labels in _labels(text, PROCESS_THREADS)}) == 4 else None

        text = wait_for(four_pids, 15, what="four workers' runtime series", interval=0.5, ignore=NOT_YET)
        pids = sorted(labels["pid"] for labels in _labels(text, PROCESS_THREADS))
        for spec in RUNTIME:  # prometheus_client's names too: one series per worker, none summed
            if spec.prometheus_client:
                assert sorted(labels["pid"] for labels in _labels(text, spec.name)) == pids, spec.name


def test_gunicorn_sync_workers_count_every_request(tmp_path: Path) -> None:
    port = free_port()
    mp = tmp_path / "mp"
    mp.mkdir()
    argv = command(GUNICORN_SYNC, port=port)
    with running(tmp_path, argv, f"127.0.0.1:{port}", {"TUIST_METRICS_MULTIPROCESS_DIR": str(mp)}) as group:
        assert load(f"127.0.0.1:{port}") == (REQUESTS, 0)
        assert_every_scrape(group, REQUESTS)


def test_uvicorn_workers_count_every_request(tmp_path: Path) -> None:
    port, mp = free_port(), tmp_path / "mp"
    mp.mkdir()
    argv = command(UVICORN, port=port)
    with running(tmp_path, argv, f"127.0.0.1:{port}", {"TUIST_METRICS_MULTIPROCESS_DIR": str(mp)}) as group:
        assert load(f"127.0.0.1:{port}") == (REQUESTS, 0)
        assert_every_scrape(group, REQUESTS, REQUESTS)


def _labels(text: str, metric: str) -> list[dict[str, str]]:
    return [dict(s.labels) for s in parse_exposition(text) if s.name == metric]


# --- SIGKILL under load, with Prometheus watching -----------------------------------------------------------

def test_sigkilled_worker_loses_nothing_and_prometheus_sees_no_reset(tmp_path: Path) -> None:
    port, mp = free_port(), tmp_path / "mp"
    mp.mkdir()
    app = f"127.0.0.1:{port}"
    argv = command(GUNICORN_SYNC, port=port)
    with running(tmp_path, argv, app, {"TUIST_METRICS_MULTIPROCESS_DIR": str(mp)}) as group, \
            prometheus_scraping(tmp_path, f"http://{group.metrics}/metrics") as prometheus:
        result: list[tuple[int, int]] = []
        loader = threading.Thread(target=lambda: result.append(load(app, threads=8, pause=0.012)))
        loader.start()
        time.sleep(1.0)
        victim = int(get(app, "/pid")[1])
        assert loader.is_alive()  # under load
        os.kill(victim, signal.SIGKILL)
        loader.join(60)
        [(ok, failed)] = result
        assert ok + failed == REQUESTS and ok >= REQUESTS - 8, (ok, failed)
        text = scrapes(group, 1)[0]
        # A sync worker records before it writes the response: at most its one request in flight was recorded
        # and never answered.
        assert ok <= sample_total(text, RUNS) <= ok + min(failed, 1), (ok, failed, sample_total(text, RUNS))
        assert_every_scrape(group, sample_total(text, RUNS))
        assert f'pid="{victim}"' not in text  # the dead worker's own series are gone ...
        assert not list(mp.glob(f"{victim}-*.db")) and (mp / "archive.db").exists()  # ... its counts folded
        total = sample_total(text, RUNS)
        time.sleep(2.5)  # two more scrapes after the load
        assert len([p for p in mp.glob("*.db") if p.name != "archive.db"]) == 4  # gunicorn replaced the victim

        def scraped_total() -> list[dict[str, object]]:
            series = query(prometheus, f"sum({RUNS})")
            return series if series and float(series[0]["value"][1]) == total else []

        wait_for(scraped_total, 15, what="Prometheus to see the final total", interval=0.5, ignore=NOT_YET)
        resets = query(prometheus, f"resets({RUNS}[5m])")
        assert resets and all(float(r["value"][1]) == 0 for r in resets), resets
        assert query(prometheus, f"count_over_time({RUNS}[5m])")  # scraped all along


# --- python -m telemetry serve ------------------------------------------------------------------------------

RECORD = """
import sys, telemetry
t = telemetry.setup(serve=False)
for _ in range(int(sys.argv[1])):
    t.recorders.runs.record("build", is_ci=True, status=0, duration_ms=5)
telemetry.shutdown()
"""


def test_serve_merges_a_directory_written_by_plain_processes(tmp_path: Path) -> None:
    mp = tmp_path / "mp"
    mp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TUIST_"))}
    env["TUIST_METRICS_MULTIPROCESS_DIR"] = str(mp)
    writers = [subprocess.Popen([sys.executable, "-c", RECORD, str(n)], cwd=ROOT, env=env) for n in (100, 200, 300)]
    for w in writers:
        assert w.wait(30) == 0
    port = free_port()
    argv = command(SERVE, dir=mp, port=port)
    group = Group(argv, tmp_path, {})
    try:
        group.wait(f"127.0.0.1:{port}", "/metrics")
        for _ in range(3):
            status, text = get(f"127.0.0.1:{port}", "/metrics")
            assert status == 200 and sample_total(text, RUNS) == 600, text
            assert sample_total(text, "tuist_runs_duration_milliseconds_count") == 600
        os.killpg(group.process.pid, signal.SIGTERM)
        assert group.process.wait(10) == 0  # SIGTERM stops it cleanly
        assert not port_open("127.0.0.1", port)
    finally:
        group.stop()


@pytest.mark.parametrize("kind", ["missing", "unwritable"])
def test_serve_refuses_a_bad_directory_naming_it(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "nope"
    if kind == "unwritable":
        if os.geteuid() == 0:
            pytest.skip("root can write anywhere")
        target.mkdir(mode=0o500)
    done = subprocess.run([sys.executable, "-m", "telemetry", "serve", "--dir", str(target), "--port", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and str(target) in done.stderr, done.stderr


# --- python -m service --workers ----------------------------------------------------------------------------

def test_service_with_workers_serves_exact_totals(tmp_path: Path) -> None:
    port, metrics_port, data = free_port(), free_port(), tmp_path / "data"
    app = f"127.0.0.1:{port}"
    argv = [sys.executable, "-m", "service", "--workers", "2", "--no-traffic", "--port", str(port),
            "--metrics-port", str(metrics_port), "--data-dir", str(data)]
    group = Group(argv, tmp_path, {}, metrics_port=metrics_port)
    try:
        group.wait(app, "/health/live")
        group.wait(group.metrics, "/metrics")
        token = issue_token(cast(Any, SimpleNamespace(data_dir=data)))
        run = json.dumps({"name": "build", "is_ci": True, "status": 0, "duration_ms": 1200}).encode()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        statuses = [get(app, "/api/projects/acme/ios-app/runs", "POST", run, headers)[0] for _ in range(12)]
        assert statuses == [201] * 12
        for text in scrapes(group):
            assert sample_total(text, RUNS, name="build", is_ci="true", status="0") == 12
            assert sample_total(text, "http_requests_total", route="/api/projects/{account}/{project}/runs",
                         status="201") == 12
            assert sample_total(text, "tuist_projects_total") == 5  # a latest-value gauge, not summed over workers

        def two_workers() -> bool:  # each worker's own series, once both have started
            return len({labels["pid"] for labels in _labels(scrapes(group, 1)[0], "target_info")}) == 2

        wait_for(two_workers, 15, what="both workers' target_info", interval=0.5, ignore=NOT_YET)
        assert sorted(p.name for p in (data / "metrics-multiproc").glob("*.db")) != []
        os.killpg(group.process.pid, signal.SIGTERM)
        assert group.process.wait(20) == 0, group.output()
        assert "workers:  2" in group.log.read_text(errors="replace")
    finally:
        group.stop()
