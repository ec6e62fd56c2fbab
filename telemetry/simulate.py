"""Synthetic activity for every catalogue metric, through the public recording API.

Used by ``python -m telemetry simulate`` so Prometheus and Grafana setups can be tried before a real service
is wired, and by the tests that check the exposition against a real Prometheus.
"""

from __future__ import annotations

import random
import threading
import time

from telemetry.catalogue import (
    CACHE_EVENT_TYPES,
    DB_CONNECTIONS_ACTIVE,
    HTTP_AVAILABLE,
    HTTP_IN_USE,
    HTTP_PHASES,
    HTTP_QUEUE_IDLE_TIME,
    HTTP_REQUEST_COUNT,
    HTTP_REQUEST_DURATION,
    REPO_CHECKOUT_QUEUE,
    REPO_CONNECTED,
    REPO_DISCONNECTED,
    REPO_QUERY_DURATION,
    REPO_READY,
    STATEMENT_KINDS,
    STORAGE_OPERATIONS,
    TOKEN_REFRESH_REASONS,
    http_phase_names,
)
from telemetry.recorders import AccountCounts, Recorders
from telemetry.registry import LabelValue

_COMMANDS = ("build", "test", "generate", "cache", "share", "run")
_HOSTS = ("s3.eu-west-1.amazonaws.com", "api.github.com", "app.posthog.com")
_NS_PER_MS = 1_000_000


class Simulator:
    """Records one tick of realistic activity per ``tick()``; ``run()`` ticks until stopped."""

    def __init__(self, recorders: Recorders, seed: int | None = None) -> None:
        self.rec = recorders
        self.random = random.Random(seed)
        self._stop = threading.Event()
        self._projects = 12
        recorders.accounts.register(lambda: AccountCounts(self._projects, 4, 57), refresh_seconds=1)

    def tick(self) -> None:
        r, rec, reg = self.random, self.rec, self.rec.registry
        for _ in range(5):
            rec.runs.record(r.choice(_COMMANDS), is_ci=r.random() < 0.4, status=int(r.random() < 0.08),
                            duration_ms=r.lognormvariate(9, 1))
        for event in sorted(CACHE_EVENT_TYPES):
            for _ in range(r.randint(1, 6)):
                rec.cache.event(event)
        rec.cache.uploaded(r.randint(10_000, 50_000_000))
        rec.cache.downloaded(r.randint(10_000, 50_000_000))
        rec.previews.uploaded()
        rec.previews.downloaded()
        values: dict[str, LabelValue] = {
            "object_key": f"cache/{r.randint(1, 40):04x}.zip", "upload_id": f"upload-{r.randint(1, 5)}",
            "part_number": r.randint(1, 4), "project_slug": f"acme/app-{r.randint(1, 3)}"}
        for op in STORAGE_OPERATIONS:
            labels = {name: values[name] for name in rec.storage.labels_of(op)}
            with rec.storage.operation(op, **labels) as handle:
                time.sleep(r.uniform(0, 0.002))
                handle.size_bytes = r.randint(1_000, 200_000_000)  # recorded by get_object_size only
        if r.random() < 0.3:
            rec.auth.token_refresh_error(cli_version=r.choice(("4.40.0", "4.41.2")),
                                         reason=r.choice(sorted(TOKEN_REFRESH_REASONS)))
        if r.random() < 0.1:
            self._projects += 1
        self._http(r, reg)
        self._database(r, reg)

    def _http(self, r: random.Random, reg: object) -> None:
        from telemetry.registry import Registry

        assert isinstance(reg, Registry)
        host = r.choice(_HOSTS)
        status = r.choice(("200", "200", "200", "404", "503"))
        queue, connect = r.uniform(0, 2), r.uniform(1, 30) if r.random() < 0.2 else 0.0
        send, receive = r.uniform(0.1, 3), r.uniform(5, 300)
        reg.counter(HTTP_REQUEST_COUNT).labels("GET", host, status).inc()
        reg.histogram(HTTP_REQUEST_DURATION).labels("GET", host, status).observe(
            (queue + connect + send + receive) * _NS_PER_MS)
        for phase, ms in zip(HTTP_PHASES, (queue, connect, send, receive), strict=True):
            if ms:  # a reused connection has no connection phase
                count, duration = http_phase_names(phase)
                reg.counter(count).labels(host).inc()
                reg.histogram(duration).labels(host).observe(ms * _NS_PER_MS)
        reg.histogram(HTTP_QUEUE_IDLE_TIME).labels(host).observe(
            0 if connect else r.uniform(0, 5_000) * _NS_PER_MS)
        reg.gauge(HTTP_AVAILABLE).labels(host).set(r.randint(0, 10))
        reg.gauge(HTTP_IN_USE).labels(host).set(r.randint(0, 10))

    def _database(self, r: random.Random, reg: object) -> None:
        from telemetry.registry import Registry

        assert isinstance(reg, Registry)
        pool = "default"
        reg.gauge(REPO_CHECKOUT_QUEUE).labels(pool).set(r.choice((0, 0, 0, 1, 2)))
        reg.gauge(REPO_READY).labels(pool).set(r.randint(0, 5))
        reg.gauge(DB_CONNECTIONS_ACTIVE).labels(pool).set(r.randint(0, 5))
        reg.counter(REPO_CONNECTED).labels(pool).inc(r.randint(0, 1))
        reg.counter(REPO_DISCONNECTED).labels(pool).inc(int(r.random() < 0.1))
        for kind in sorted(STATEMENT_KINDS):
            reg.histogram(REPO_QUERY_DURATION).labels(pool, kind).observe(
                r.lognormvariate(0, 1))

    def run(self, duration: float | None = None, interval: float = 0.5) -> None:
        deadline = None if duration is None else time.monotonic() + duration
        while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
            self.tick()
            self._stop.wait(interval)

    def stop(self) -> None:
        self._stop.set()
