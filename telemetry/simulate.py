"""Synthetic activity for every catalogue metric, through the public recording API.

Used by ``python -m telemetry simulate`` so Prometheus and Grafana setups can be tried before a real service
is wired, and by the tests that check the exposition against a real Prometheus.
"""

from __future__ import annotations

import random
import threading
import time

from telemetry.catalogue import CACHE_EVENT_TYPES, STATEMENT_KINDS, TOKEN_REFRESH_REASONS
from telemetry.recorders import AccountCounts, Recorders

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
        key = f"cache/{r.randint(1, 40):04x}.zip"
        upload = f"upload-{r.randint(1, 5)}"
        storage = rec.storage
        for op in ("get_object_size", "multipart_start_upload", "get_object_as_string", "check_object_existence",
                   "generate_download_presigned_url"):
            with storage.operation(op, object_key=key) as handle:
                time.sleep(r.uniform(0, 0.002))
                handle.size_bytes = r.randint(1_000, 200_000_000)
        with storage.operation("delete_all_objects", project_slug=f"acme/app-{r.randint(1, 3)}"):
            time.sleep(r.uniform(0, 0.002))
        with storage.operation("multipart_generate_upload_part_presigned_url", object_key=key,
                               part_number=r.randint(1, 4), upload_id=upload):
            pass
        with storage.operation("multipart_complete_upload", object_key=key, upload_id=upload):
            pass
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
        reg.counter("tuist_http_request_count").labels("GET", host, status).inc()
        reg.histogram("tuist_http_request_duration_nanosecond").labels("GET", host, status).observe(
            (queue + connect + send + receive) * _NS_PER_MS)
        for phase, ms in (("queue", queue), ("send", send), ("receive", receive)):
            reg.counter(f"tuist_http_{phase}_count").labels(host).inc()
            reg.histogram(f"tuist_http_{phase}_duration_nanoseconds").labels(host).observe(ms * _NS_PER_MS)
        reg.histogram("tuist_http_queue_idle_time_nanoseconds").labels(host).observe(
            0 if connect else r.uniform(0, 5_000) * _NS_PER_MS)
        if connect:
            reg.counter("tuist_http_connection_count").labels(host).inc()
            reg.histogram("tuist_http_connection_duration_nanoseconds").labels(host).observe(connect * _NS_PER_MS)
        reg.gauge("tuist_http_queue_available_connections").labels(host).set(r.randint(0, 10))
        reg.gauge("tuist_http_queue_in_use_connections").labels(host).set(r.randint(0, 10))

    def _database(self, r: random.Random, reg: object) -> None:
        from telemetry.registry import Registry

        assert isinstance(reg, Registry)
        pool = "default"
        reg.gauge("tuist_repo_pool_checkout_queue_length").labels(pool).set(r.choice((0, 0, 0, 1, 2)))
        reg.gauge("tuist_repo_pool_ready_conn_count").labels(pool).set(r.randint(0, 5))
        reg.gauge("db_connections_active").labels(pool).set(r.randint(0, 5))
        reg.counter("tuist_repo_pool_db_connection_connected").labels(pool).inc(r.randint(0, 1))
        reg.counter("tuist_repo_pool_db_connection_disconnected").labels(pool).inc(int(r.random() < 0.1))
        for kind in sorted(STATEMENT_KINDS):
            reg.histogram("tuist_repo_query_duration_milliseconds").labels(pool, kind).observe(
                r.lognormvariate(0, 1))

    def run(self, duration: float | None = None, interval: float = 0.5) -> None:
        deadline = None if duration is None else time.monotonic() + duration
        while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
            self.tick()
            self._stop.wait(interval)

    def stop(self) -> None:
        self._stop.set()
