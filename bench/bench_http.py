"""Scrape latency of the /metrics server: 1,000 counter series, served by this branch's server (h11), by the
server before it (``http.server``, the file as it is on ``main``, loaded from git) and by prometheus_client's
own ``start_http_server`` (the same 1,000 series in its registry), all in this run.

Modes: keep-alive (one connection reused), fresh connection per scrape, gzip on keep-alive, and 4 concurrent
clients on keep-alive connections (scrapes per second over all four). The servers run in this process, so
client and server share the GIL; the figures compare servers with each other, not with a remote Prometheus.
Rounds are interleaved and each figure is the median. Target (exit 1 if missed): the new server's keep-alive
median at most 1.25x the old one's.

Run: ``.venv/bin/python bench/bench_http.py``.
"""

from __future__ import annotations

import http.client
import statistics
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path

import prometheus_client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from telemetry.exposition.reader import PrometheusReader  # noqa: E402
from telemetry.exposition.server import MetricsServer  # noqa: E402
from telemetry.registry import Registry  # noqa: E402

SERIES = 1000
ROUNDS = 15
PER_ROUND = 20
TARGET = 1.25


def old_server_class() -> type | None:
    """``MetricsServer`` as ``main`` has it (skipped when git or main is not there)."""
    try:
        source = subprocess.run(["git", "show", "main:telemetry/exposition/server.py"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    if "http.server" not in source:  # main has the new server already: compare with its parent commit instead
        return None
    module = types.ModuleType("bench_old_server")
    exec(compile(source, "main:telemetry/exposition/server.py", "exec"), module.__dict__)
    return module.MetricsServer  # type: ignore[no-any-return]


def scrape_times(port: int, path: str, *, fresh: bool, gzip: bool, n: int) -> list[float]:
    headers = {"Accept-Encoding": "gzip"} if gzip else {}
    out = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(n):
        if fresh:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        start = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        out.append(time.perf_counter() - start)
        assert response.status == 200 and body
    conn.close()
    return out


def concurrent_rate(port: int, path: str, n: int) -> float:
    """Scrapes per second with 4 clients on keep-alive connections."""
    threads = [threading.Thread(target=scrape_times, args=(port, path), kwargs={"fresh": False, "gzip": False, "n": n})
               for _ in range(4)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 4 * n / (time.perf_counter() - start)


def main() -> int:
    registry = Registry()
    family = registry.counter("tuist_http_request_count")
    for i in range(SERIES):
        family.labels("GET", f"host{i}", "200").inc(i)
    render = PrometheusReader(registry).scrape
    pc_registry = prometheus_client.CollectorRegistry()
    pc_counter = prometheus_client.Counter("tuist_http_request_count", "requests", ["method", "host", "status"],
                                           registry=pc_registry)
    for i in range(SERIES):
        pc_counter.labels("GET", f"host{i}", "200").inc(i)
    pc_server, _ = prometheus_client.start_http_server(0, "127.0.0.1", registry=pc_registry)

    servers: dict[str, tuple[int, str, Callable[[], None]]] = {}
    new = MetricsServer(render, host="127.0.0.1", port=0)
    servers["new (h11)"] = (new.port, "/metrics", new.stop)
    old_cls = old_server_class()
    if old_cls is not None:
        old = old_cls(render, host="127.0.0.1", port=0)
        servers["before (http.server)"] = (old.port, "/metrics", old.stop)
    servers["prometheus_client"] = (pc_server.server_port, "/metrics", pc_server.shutdown)

    modes = {"keep-alive": {"fresh": False, "gzip": False}, "fresh connection": {"fresh": True, "gzip": False},
             "gzip, keep-alive": {"fresh": False, "gzip": True}}
    times: dict[tuple[str, str], list[float]] = {(s, m): [] for s in servers for m in modes}
    rates: dict[str, list[float]] = {s: [] for s in servers}
    try:
        for _ in range(ROUNDS):
            for name, (port, path, _) in servers.items():
                for mode, kw in modes.items():
                    times[(name, mode)] += scrape_times(port, path, n=PER_ROUND, **kw)
                rates[name].append(concurrent_rate(port, path, PER_ROUND // 2))
    finally:
        for _, _, stop in servers.values():
            stop()

    print(f"Scraping {SERIES} counter series on loopback (median ms per scrape; 4 clients: scrapes/s)\n")
    print("| Server | " + " | ".join(modes) + " | 4 clients |")
    print("| --- |" + " ---: |" * (len(modes) + 1))
    for name in servers:
        cells = [f"{statistics.median(times[(name, m)]) * 1000:.2f}" for m in modes]
        print(f"| {name} | " + " | ".join(cells) + f" | {statistics.median(rates[name]):.0f} |")
    if old_cls is None:
        print("\n(the server before this one is not on main any more; no before/after row)")
        return 0
    ratio = statistics.median(times[("new (h11)", "keep-alive")]) / statistics.median(
        times[("before (http.server)", "keep-alive")])
    print(f"\nnew / before, keep-alive: {ratio:.2f}x (target ≤ {TARGET}x)")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
