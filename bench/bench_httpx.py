"""httpx instrumentation cost: a GET on a keep-alive loopback connection, bare vs instrumented.

The server (``tests/http_server.py``) runs in a child process so it does not share the client's GIL: the
per-request time is then the client's own work plus the loopback round trip, which makes the overhead ratio
stricter than an in-process server would. The configurations take turns request by request (the order rotates
each time), every request is timed, and the ratio compares medians; on a shared machine this cancels the
slow drifts that make round-by-round timings swing by tens of percent. Configurations:

- bare: an uninstrumented ``httpx.Client``;
- instrumented: ``instrument_httpx(client)`` as a service gets it by default (no tracer provider configured,
  so the upstream span layer is not attached) — target: at most 1.15x bare;
- instrumented + upstream spans: ``spans=True`` with an SDK tracer provider (no exporter) and an SDK meter
  provider, i.e. opentelemetry-instrumentation-httpx on top — reported, no target.

Run: ``.venv/bin/python bench/bench_httpx.py``. Exit code 1 when the target is missed.
"""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from telemetry.catalogue import HTTP_REQUEST_COUNT  # noqa: E402
from telemetry.instrumentation.httpx import instrument_httpx, uninstrument_httpx  # noqa: E402
from telemetry.registry import Registry  # noqa: E402

TARGET = 1.15
REQUESTS = 6000  # per configuration
SERVER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from tests.http_server import LoopbackServer
with LoopbackServer() as server:
    print(server.url, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
"""


def timed_request(client: httpx.Client, url: str) -> int:
    """Nanoseconds for one GET, body read and response closed."""
    start = time.perf_counter_ns()
    client.get(url)
    return time.perf_counter_ns() - start


def main() -> int:
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(ROOT)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip() + "/bench"
        registry = Registry()
        tracer_provider = TracerProvider()
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        clients = {
            "bare": httpx.Client(),
            "instrumented (default)": httpx.Client(),
            "instrumented + upstream spans": httpx.Client(),
        }
        instrument_httpx(clients["instrumented (default)"], registry=registry)
        instrument_httpx(clients["instrumented + upstream spans"], registry=registry, spans=True,
                         tracer_provider=tracer_provider, meter_provider=meter_provider)
        times: dict[str, list[int]] = {name: [] for name in clients}
        for client in clients.values():
            for _ in range(100):  # connect and warm up
                client.get(url)
        order = list(clients.items())
        gc.disable()
        try:
            for i in range(REQUESTS):
                for name, client in order[i % 3:] + order[:i % 3]:
                    times[name].append(timed_request(client, url))
        finally:
            gc.enable()
        recorded = sum(c.value for c in registry.counter(HTTP_REQUEST_COUNT).series())
        expected = 2 * (100 + REQUESTS)
        for client in clients.values():
            uninstrument_httpx(client)
            client.close()
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=10)

    bare_median = statistics.median(times["bare"])
    bare_p10 = statistics.quantiles(times["bare"], n=10)[0]
    print(f"## httpx: GET on a keep-alive loopback connection ({REQUESTS} requests per configuration, "
          "taking turns)\n")
    print("| Configuration | median µs | ratio | p10 µs | p10 ratio | Target (median ratio) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    failed = False
    for name, values in times.items():
        median = statistics.median(values)
        p10 = statistics.quantiles(values, n=10)[0]
        ratio = median / bare_median
        target = f"≤ {TARGET:.2f}x" if name == "instrumented (default)" else ""
        if target and ratio > TARGET:
            failed = True
        print(f"| {name} | {median / 1e3:.1f} | {ratio:.3f}x | {p10 / 1e3:.1f} | {p10 / bare_p10:.3f}x "
              f"| {target} |")
    print(f"\nLoad average during the run: {os.getloadavg()[0]:.2f} (machine with {os.cpu_count()} CPUs).")
    print(f"\nRequests recorded in {HTTP_REQUEST_COUNT}: {recorded:.0f} of {expected}.")
    if recorded != expected:
        print("FAIL: the instrumented clients did not record every request")
        failed = True
    if failed:
        print(f"\nFAIL: instrumented httpx exceeds {TARGET}x bare")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
