"""Service throughput on a simple route with telemetry on vs off, in one run with one load generator.

Copies of the reference service run as subprocesses on free loopback ports, all built by
``service.app.create_app`` and served by uvicorn:

- "off": no telemetry middleware, uvicorn as it runs out of the box (its own access log on, one line per
  request) — the gated baseline: a service without this package still logs its requests;
- "off, no access log": no telemetry middleware and no request log at all (reported);
- "on": the default ``make run`` setup: http_requests_total / http_request_duration_seconds, request ids and one
  JSON access log line per request replacing uvicorn's (no spans: no OTLP endpoint is configured);
- "on + tracing" (reported): the same plus OpenTelemetry ASGI server spans exported over OTLP/HTTP to a loopback
  sink in this process.

The load generator (keep-alive HTTP/1.1 over raw sockets, several connections) drives ``GET /health/live``
against each in short rounds, one variant after the other, the order rotating. Every server is pinned to one
core and the load generator to another, and each round records the server's own CPU time, so the gated figure
— the median over rounds of on/off in requests per server CPU-second — does not move with the load other
processes put on a shared machine; wall-clock req/s is printed beside it. Target: at least 0.85.

    .venv/bin/python bench/bench_service.py
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.85
ROUNDS = 16
SECONDS = 0.5
CONNECTIONS = 4
PATH = "/health/live"

SERVER = """
import logging, sys
import uvicorn
from telemetry import logs
from service.app import create_app
from service.components import Service
from service.settings import ServiceSettings

port, metrics_port, data_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
instrument, uvicorn_access_log = sys.argv[4] == "on", sys.argv[5] == "uvicorn-access-log"
settings = ServiceSettings.from_env(port=port, data_dir=data_dir, traffic=False)
logs.configure("INFO")
service = Service.start(settings, metrics_port=metrics_port)
app = create_app(service, instrument=instrument)
uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=uvicorn_access_log, lifespan="off")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Sink(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that accepts and discards."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


# Every server on one core and the load generator on another, so each variant sees the same scheduling.
CPUS = sorted(os.sched_getaffinity(0))
SERVER_CPU, LOAD_CPU = CPUS[-1], CPUS[0]


def _pinned(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if len(CPUS) > 1 and shutil.which("taskset") else []


def start(variant: str, tmp: str, otlp: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SENTRY_", "SERVICE_", "TUIST_"))}
    if variant == "tracing":
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp
    process = subprocess.Popen([*_pinned(SERVER_CPU), sys.executable, "-c", SERVER, str(port), str(free_port()),
                                os.path.join(tmp, variant), "off" if variant.startswith("off") else "on",
                                "uvicorn-access-log" if variant == "off" else "-"], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process, port
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"the {variant} server exited with {process.returncode}") from None
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the {variant} server did not start")


def _connection(port: int, stop: threading.Event, counts: list[int], index: int) -> None:
    request = f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = b""
        while not stop.is_set():
            sock.sendall(request)
            while True:
                head_end = buffer.find(b"\r\n\r\n")
                if head_end >= 0:
                    head = buffer[:head_end].lower()
                    start = head.find(b"content-length:")
                    length = int(head[start + 15:head.find(b"\r\n", start) if head.find(b"\r\n", start) > 0
                                      else len(head)]) if start >= 0 else 0
                    total = head_end + 4 + length
                    if len(buffer) >= total:
                        if not head.startswith(b"http/1.1 200"):
                            raise RuntimeError(f"unexpected response {head[:40]!r}")
                        buffer = buffer[total:]
                        break
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("connection closed")
                buffer += chunk
            counts[index] += 1


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(port: int, seconds: float) -> tuple[int, float]:
    """(requests, wall seconds) over ``seconds`` with CONNECTIONS keep-alive connections."""
    stop = threading.Event()
    counts = [0] * CONNECTIONS
    threads = [threading.Thread(target=_connection, args=(port, stop, counts, i)) for i in range(CONNECTIONS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts), time.perf_counter() - started


VARIANTS = ("off", "off-silent", "on", "tracing")
LABELS = {"off": "telemetry off (uvicorn's default access log)", "off-silent": "telemetry off, no access log",
          "on": "telemetry on (default `make run` setup)", "tracing": "telemetry on + tracing (OTLP/HTTP export)"}


def main() -> int:
    if len(CPUS) > 1:
        os.sched_setaffinity(0, {LOAD_CPU})
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    sink.daemon_threads = True
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    otlp = f"http://127.0.0.1:{sink.server_address[1]}"
    wall: dict[str, list[float]] = {v: [] for v in VARIANTS}  # requests per wall second
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}  # requests per CPU second of the server
    with tempfile.TemporaryDirectory() as tmp:
        servers = {variant: start(variant, tmp, otlp) for variant in VARIANTS}
        try:
            for _, port in servers.values():
                load(port, 1.0)  # warm-up: imports, first requests, pool
            for r in range(ROUNDS):
                for variant in VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]:
                    process, port = servers[variant]
                    before = cpu_seconds(process.pid)
                    requests, seconds = load(port, SECONDS)
                    used = cpu_seconds(process.pid) - before
                    wall[variant].append(requests / seconds)
                    cpu[variant].append(requests / used if used > 0 else float("inf"))
        finally:
            for process, _ in servers.values():
                process.terminate()
            for process, _ in servers.values():
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
            sink.shutdown()

    def ratio(data: dict[str, list[float]], variant: str, base: str = "off") -> float:
        return statistics.median(a / b for a, b in zip(data[variant], data[base], strict=True))

    print(f"## Service throughput, GET {PATH} ({CONNECTIONS} keep-alive connections, {ROUNDS} rounds of "
          f"{SECONDS:g} s per variant, order rotating)\n")
    print("| Variant | Median req/s (wall) | Median req per server CPU-second | CPU µs per request |")
    print("| --- | ---: | ---: | ---: |")
    for variant in VARIANTS:
        per_cpu = statistics.median(cpu[variant])
        print(f"| {LABELS[variant]} | {statistics.median(wall[variant]):.0f} | {per_cpu:.0f} | "
              f"{1e6 / per_cpu:.0f} |")
    gated = ratio(cpu, "on")
    ok = gated >= TARGET
    print("\n| Ratio (median of same-round ratios) | Per server CPU-second | Wall clock | Target | Result |")
    print("| --- | ---: | ---: | ---: | --- |")
    print(f"| on / off | {gated:.3f} | {ratio(wall, 'on'):.3f} | >= {TARGET} (CPU) | "
          f"{'ok' if ok else 'MISSED'} |")
    print(f"| on / off without any access log | {ratio(cpu, 'on', 'off-silent'):.3f} | "
          f"{ratio(wall, 'on', 'off-silent'):.3f} | (reported) | |")
    print(f"| on + tracing / off | {ratio(cpu, 'tracing'):.3f} | {ratio(wall, 'tracing'):.3f} | (reported) | |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
