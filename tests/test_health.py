"""Health checks: ``telemetry.health.Health`` on its own (pass, fail, timeout, a hung check shared by
concurrent probes), then the service's probes against the machine's PostgreSQL and Redis, reached through a
loopback TCP proxy the test can cut to simulate an outage (and a closed port for a Redis that is down)."""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from telemetry.health import Health
from telemetry.testing import wait_for
from tests.conftest import port_open, require
from tests.service_process import ServiceProcess

PG = ("127.0.0.1", 5432)
REDIS = ("127.0.0.1", 6379)


def test_all_checks_pass() -> None:
    health = Health(timeout=1)
    health.add("a", lambda: None)
    health.add("b", lambda: 1)
    status, body = health.ready()
    assert status == 200
    assert body["status"] == "ready" and set(body["checks"]) == {"a", "b"} and "failing" not in body
    assert all(c["status"] == "ok" for c in body["checks"].values())
    assert health.live() == (200, {"status": "ok"})


def test_a_raising_check_fails_readiness_naming_it() -> None:
    health = Health()
    health.add("database", lambda: None)

    def broken() -> None:
        raise ConnectionRefusedError("connection refused")
    health.add("redis", broken)
    status, body = health.ready()
    assert status == 503
    assert body["failing"] == ["redis"] and body["status"] == "not_ready"
    assert body["checks"]["redis"] == {"status": "failing", "duration_ms": body["checks"]["redis"]["duration_ms"],
                                       "error": "ConnectionRefusedError: connection refused"}
    assert body["checks"]["database"]["status"] == "ok"


def test_a_hung_check_times_out_and_concurrent_probes_share_it() -> None:
    release = threading.Event()
    started = []

    def hung() -> None:
        started.append(1)
        release.wait(10)
    health = Health(timeout=0.3)
    health.add("slow", hung)
    results: list[tuple[int, dict[str, object]]] = []
    t0 = time.perf_counter()
    threads = [threading.Thread(target=lambda: results.append(health.ready())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    release.set()
    assert 0.25 < elapsed < 1.5
    assert [r[0] for r in results] == [503] * 4
    assert all(r[1]["checks"]["slow"]["error"] == "timed out after 0.3 s" for r in results)  # type: ignore[index]
    assert len(started) == 1  # one thread for the hung dependency, not one per probe
    time.sleep(0.05)
    status, _ = health.ready()  # the hung attempt finished: the next probe runs the check again
    assert status == 200 and len(started) == 2


def test_per_check_timeout_and_bad_arguments() -> None:
    health = Health(timeout=5)
    health.add("quick", lambda: time.sleep(0.5), timeout=0.1)
    t0 = time.perf_counter()
    assert health.ready()[0] == 503
    assert time.perf_counter() - t0 < 0.4
    with pytest.raises(ValueError, match="already registered"):
        health.add("quick", lambda: None)
    with pytest.raises(ValueError, match="above 0"):
        Health(timeout=0)


class TcpProxy:
    """Forwards a loopback port to ``target``; ``cut()`` drops every connection and refuses new ones,
    ``restore()`` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone leaves the socket listening.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.cut()


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database on the machine's server, dropped afterwards."""
    require(port_open(*PG), "PostgreSQL is not listening on 127.0.0.1:5432")
    import psycopg

    name = f"service_health_{secrets.token_hex(4)}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield name
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def wait_for_status(url: str, status: int, timeout: float = 10) -> httpx.Response:
    """The first response of ``url`` with ``status``."""
    def answered() -> httpx.Response | None:
        response = httpx.get(url, timeout=5)
        return response if response.status_code == status else None

    return wait_for(answered, timeout, interval=0.2, what=f"{url} to answer {status}")


@pytest.mark.slow
def test_readiness_with_postgresql_and_redis_and_their_outages(tmp_path: Path, pg_database: str) -> None:
    require(port_open(*REDIS), "Redis is not listening on 127.0.0.1:6379")
    pg, redis = TcpProxy(PG), TcpProxy(REDIS)
    env = {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{pg.port}/{pg_database}",
           "REDIS_URL": f"redis://127.0.0.1:{redis.port}/0", "SERVICE_HEALTH_TIMEOUT_SECONDS": "1"}
    try:
        with ServiceProcess(tmp_path, traffic=False, env=env) as service:
            service.wait_ready()
            ready = httpx.get(f"{service.url}/health/ready")
            assert ready.status_code == 200, ready.text
            assert set(ready.json()["checks"]) == {"database", "redis"}
            assert httpx.get(f"{service.url}/dashboard/acme/ios-app").status_code == 401  # serving

            redis.cut()
            down = wait_for_status(f"{service.url}/health/ready", 503)
            assert down.status_code == 503 and down.json()["failing"] == ["redis"]
            assert down.json()["checks"]["database"]["status"] == "ok"
            assert httpx.get(f"{service.url}/health/live").status_code == 200

            pg.cut()
            t0 = time.monotonic()
            both = wait_for_status(f"{service.url}/health/ready", 503)
            body = both.json()
            if body["failing"] != ["database", "redis"]:
                def both_failing() -> dict[str, Any] | None:
                    current: dict[str, Any] = httpx.get(f"{service.url}/health/ready", timeout=5).json()
                    return current if current["failing"] == ["database", "redis"] else None

                body = wait_for(both_failing, 10, what="both checks to fail")
            assert time.monotonic() - t0 < 10
            live = httpx.get(f"{service.url}/health/live")
            assert live.status_code == 200 and live.json() == {"status": "ok"}
            # what needs no database still works: the marketing page and the API docs
            assert httpx.get(f"{service.url}/").status_code == 200
            assert httpx.get(f"{service.url}/api/docs").status_code == 200

            pg.restore()
            redis.restore()
            back = wait_for_status(f"{service.url}/health/ready", 200, timeout=15)
            assert back.status_code == 200, back.text
            text = service.scrape()
            assert "tuist_repo_pool_db_connection_disconnected" in text
    finally:
        pg.close()
        redis.close()


@pytest.mark.slow
def test_readiness_with_redis_on_a_closed_port(tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]  # bound, never listening: connections are refused
    try:
        with ServiceProcess(tmp_path, traffic=False, env={"REDIS_URL": f"redis://127.0.0.1:{port}/0"}) as service:
            service.wait_ready()
            t0 = time.perf_counter()
            response = httpx.get(f"{service.url}/health/ready")
            assert time.perf_counter() - t0 < 2
            assert response.status_code == 503
            body = response.json()
            assert body["failing"] == ["redis"] and body["checks"]["database"]["status"] == "ok"
            assert "Connection" in body["checks"]["redis"]["error"]
            assert httpx.get(f"{service.url}/health/live").status_code == 200
    finally:
        closed.close()


def test_twenty_concurrent_async_probes_of_a_hung_check_answer_within_its_timeout() -> None:
    import asyncio

    release = threading.Event()
    started = []

    def hung() -> None:
        started.append(1)
        release.wait(10)
    health = Health(timeout=0.5)
    health.add("slow", hung)

    async def probe() -> tuple[float, int]:
        t0 = time.perf_counter()
        status, _ = await health.ready_async()
        return time.perf_counter() - t0, status

    async def main() -> list[tuple[float, int]]:
        return await asyncio.gather(*(probe() for _ in range(20)))

    try:
        results = asyncio.run(main())
    finally:
        release.set()
    worst = max(t for t, _ in results)
    assert [s for _, s in results] == [503] * 20
    assert worst < 0.5 + 0.3, f"slowest of 20 concurrent probes: {worst:.3f} s (timeout 0.5 s)"
    assert len(started) == 1  # one in-flight check shared by every probe


@pytest.mark.slow
def test_twenty_concurrent_probes_with_a_black_holed_redis_answer_within_the_timeout(tmp_path: Path) -> None:
    from tests.posthog_capture import BlackHole

    with BlackHole() as hole:  # accepts the TCP connection and never answers the PING
        port = hole.url.rsplit(":", 1)[1]
        env = {"REDIS_URL": f"redis://127.0.0.1:{port}/0", "SERVICE_HEALTH_TIMEOUT_SECONDS": "1"}
        with ServiceProcess(tmp_path, traffic=False, env=env) as service:
            service.wait_ready()

            def probe() -> tuple[float, int]:
                t0 = time.perf_counter()
                response = httpx.get(f"{service.url}/health/ready", timeout=10)
                return time.perf_counter() - t0, response.status_code

            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(20) as pool:
                results = list(pool.map(lambda _: probe(), range(20)))
    worst = max(t for t, _ in results)
    assert [s for _, s in results] == [503] * 20
    assert worst < 1.0 + 0.5, f"slowest of 20 concurrent probes: {worst:.3f} s (timeout 1 s)"
