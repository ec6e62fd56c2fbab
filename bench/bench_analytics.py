"""Analytics must never slow a request: reference-service page latency with analytics off vs on, with the
PostHog host up, down (connection refused) and black-holed (accepts, never answers).

Four ``python -m service --no-traffic`` processes run side by side: analytics off, and on with
TUIST_POSTHOG_URL pointing at a loopback capture endpoint, at a closed port, and at a black hole. Each request
is ``GET /`` — an HTML page, so it renders the browser snippet and the middleware captures a ``$pageview`` —
sent to the four services in turn (so machine noise falls on each alike). Target: each configuration's p99 at
most 1.1x the p99 with analytics off. A second table shows the in-process cost of one ``capture()`` call.

Run: ``.venv/bin/python bench/bench_analytics.py``. Exit code 1 when a target is missed.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from telemetry.analytics import Analytics, Event, User  # noqa: E402
from telemetry.registry import Registry  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.posthog_capture import BlackHole, CaptureServer  # noqa: E402
from tests.service_process import ServiceProcess  # noqa: E402

TARGET = 1.1
WARMUP = 100
REQUESTS = 2000
KEY = "phc_bench"


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def service_latencies(tmp: Path, capture: CaptureServer, hole: BlackHole) -> dict[str, list[float]]:
    configs = {
        "off": {},
        "on, host up": {"TUIST_POSTHOG_URL": capture.url},
        "on, host down": {"TUIST_POSTHOG_URL": f"http://127.0.0.1:{free_port()}"},
        "on, host black-holed": {"TUIST_POSTHOG_URL": hole.url},
    }
    services = {}
    for i, (name, env) in enumerate(configs.items()):
        (tmp / str(i)).mkdir()
        full = {**env, "TUIST_POSTHOG_API_KEY": KEY} if env else {}
        services[name] = ServiceProcess(tmp / str(i), env=full, traffic=False)
    try:
        for s in services.values():
            s.wait_ready(60)
        clients = {name: httpx.Client(base_url=s.url, timeout=10) for name, s in services.items()}
        samples: dict[str, list[float]] = {name: [] for name in services}
        for n in range(WARMUP + REQUESTS):
            for name, client in clients.items():
                start = time.perf_counter()
                response = client.get("/")
                took = time.perf_counter() - start
                if response.status_code != 200:
                    raise SystemExit(f"{name}: GET / answered {response.status_code}")
                if n >= WARMUP:
                    samples[name].append(took)
        for client in clients.values():
            client.close()
        return samples
    finally:
        for s in services.values():
            s.stop()


def capture_cost(url: str) -> dict[str, float]:
    """Microseconds per ``capture()`` on the calling thread: disabled, and enabled (hand-off queue)."""
    user = User(id=1, email="a@example.com", account_name="a", organization="o", project="o/p")
    out = {}
    for name, analytics in (("disabled", Analytics(registry=Registry())),
                            ("enabled", Analytics(KEY, url, registry=Registry(), flush_interval=0.5))):
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(2000):
                analytics.capture(Event.RUN_REPORT, distinct_id=user, properties={"name": "build"}, route="/")
            best = min(best, (time.perf_counter() - start) / 2000 * 1e6)
            analytics.flush(5)
        analytics.shutdown(timeout=2)
        out[name] = best
    return out


def main() -> int:
    with CaptureServer() as capture, BlackHole() as hole, tempfile.TemporaryDirectory() as tmp:
        samples = service_latencies(Path(tmp), capture, hole)
        costs = capture_cost(capture.url)
        received = len(capture.events)
    base = p99(samples["off"])
    ok = True
    print(f"GET / on the reference service, {REQUESTS} requests per configuration, interleaved\n")
    print("| analytics | p50 (ms) | p99 (ms) | p99 / off | target |")
    print("| --- | --- | --- | --- | --- |")
    for name, s in samples.items():
        ratio = p99(s) / base
        target = "" if name == "off" else f"<= {TARGET}x"
        missed = name != "off" and ratio > TARGET
        ok = ok and not missed
        print(f"| {name} | {statistics.median(s) * 1e3:.3f} | {p99(s) * 1e3:.3f} | {ratio:.3f}x | {target}"
              f"{' MISSED' if missed else ''} |")
    print(f"\n(the capture endpoint received {received} events)\n")
    print("| capture() on the calling thread | µs per call |")
    print("| --- | --- |")
    for name, us in costs.items():
        print(f"| {name} | {us:.2f} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
