"""SQLAlchemy instrumentation on real databases: SQLite files and PostgreSQL (127.0.0.1:5432, database test),
sync and asyncio engines, read through a real /metrics endpoint where the issue says "on /metrics"."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import create_engine  # imported before any patching, as services do
from sqlalchemy.ext.asyncio import create_async_engine

from telemetry.catalogue import DB_MS
from telemetry.cells import HistogramCell
from telemetry.exposition.reader import PrometheusReader
from telemetry.exposition.server import MetricsServer
from telemetry.instrumentation._db_pool import statement_kind
from telemetry.instrumentation.sqlalchemy import (
    instrument_sqlalchemy,
    instrumented_engines,
    uninstrument_sqlalchemy,
)
from telemetry.registry import Registry
from telemetry.testing import sample_value, wait_for
from tests.conftest import port_open, require

PG_SYNC = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_ASYNC = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


@pytest.fixture(autouse=True)
def _uninstrument_all() -> Iterator[None]:
    yield
    uninstrument_sqlalchemy()


def _require_postgres() -> None:
    require(port_open("127.0.0.1", 5432), "PostgreSQL is not listening on 127.0.0.1:5432")


@pytest.fixture(params=["sqlite", "postgresql"])
def sync_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        _require_postgres()
        return PG_SYNC
    return f"sqlite:///{tmp_path / 'sync.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def async_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        _require_postgres()
        return PG_ASYNC
    return f"sqlite+aiosqlite:///{tmp_path / 'async.db'}"


@pytest.fixture
def metrics(registry: Registry) -> Iterator[Any]:
    """A real /metrics endpoint over the test registry; ``metrics()`` returns its text."""
    server = MetricsServer(PrometheusReader(registry).scrape, host="127.0.0.1", port=0)

    def scrape() -> dict[str, float]:
        with urllib.request.urlopen(server.url, timeout=5) as response:
            return str(response.read().decode())
    yield scrape
    server.stop()


def pool_series(text: str, pool: str) -> tuple[float | None, float | None, float | None]:
    """(queue length, ready, active) for ``pool``."""
    return tuple(sample_value(text, name, pool=pool) for name in (  # type: ignore[return-value]
        "tuist_repo_pool_checkout_queue_length", "tuist_repo_pool_ready_conn_count", "db_connections_active"))


def counter(registry: Registry, name: str, *labels: str) -> float:
    return next((c.value for c in registry.counter(name).series() if c.labels == labels), 0)


def query_hist(registry: Registry, pool: str, kind: str) -> tuple[list[int], float, int]:
    for child in registry.histogram("tuist_repo_query_duration_milliseconds").series():
        if child.labels == (pool, kind):
            counts, total, n = child.snapshot()
            return counts, total, n
    return [0] * (len(DB_MS) + 1), 0, 0


def test_four_holders_on_a_pool_of_two_queue_two(sync_url: str, registry: Registry, metrics: Any) -> None:
    engine = sa.create_engine(sync_url, pool_size=2, max_overflow=0, pool_timeout=30)
    instrument_sqlalchemy(engine, pool_name="main", registry=registry)
    release = threading.Event()
    inside = threading.Semaphore(0)

    def hold() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            inside.release()
            release.wait(20)

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(2):
            assert inside.acquire(timeout=10)
        assert wait_for(lambda: pool_series(metrics(), "main")[0] == 2)
        assert pool_series(metrics(), "main") == (2, 0, 2)
    finally:
        release.set()
        for t in threads:
            t.join()
    assert pool_series(metrics(), "main") == (0, 2, 0)
    assert sample_value(metrics(), "tuist_repo_pool_db_connection_connected", pool="main") == 2
    engine.dispose()


def test_async_engine_holders_queue_too(async_url: str, registry: Registry, metrics: Any) -> None:
    async def main() -> None:
        engine = create_async_engine(async_url, pool_size=2, max_overflow=0, pool_timeout=30)
        instrument_sqlalchemy(engine, pool_name="async", registry=registry)
        release = asyncio.Event()
        inside = 0

        async def hold() -> None:
            nonlocal inside
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
                inside += 1
                await release.wait()

        tasks = [asyncio.create_task(hold()) for _ in range(4)]
        try:
            for _ in range(200):
                await asyncio.sleep(0.02)
                if inside == 2 and pool_series(await asyncio.to_thread(metrics), "async")[0] == 2:
                    break
            assert pool_series(await asyncio.to_thread(metrics), "async") == (2, 0, 2)
        finally:
            release.set()
            await asyncio.gather(*tasks)
        assert pool_series(await asyncio.to_thread(metrics), "async") == (0, 2, 0)
        await engine.dispose()
        assert pool_series(await asyncio.to_thread(metrics), "async") == (0, 0, 0)

    asyncio.run(main())
    assert counter(registry, "tuist_repo_pool_db_connection_connected", "async") == 2
    assert counter(registry, "tuist_repo_pool_db_connection_disconnected", "async") == 2
    # four holders' SELECT 1, plus whatever the dialect runs on its first connection (asyncpg: version checks)
    assert 4 <= query_hist(registry, "async", "SELECT")[2] <= 8


def test_dispose_invalidate_and_detach_count_disconnections(sync_url: str, registry: Registry,
                                                            metrics: Any) -> None:
    engine = create_engine(sync_url, pool_size=2, max_overflow=0)
    instrument_sqlalchemy(engine, pool_name="p", registry=registry)
    with engine.connect() as a, engine.connect() as b:
        a.execute(sa.text("SELECT 1"))
        b.execute(sa.text("SELECT 1"))
    assert pool_series(metrics(), "p") == (0, 2, 0)
    assert sample_value(metrics(), "tuist_repo_pool_db_connection_connected", pool="p") == 2

    with engine.connect() as conn:
        conn.invalidate()  # hard invalidation closes the DBAPI connection: one disconnection
    assert sample_value(metrics(), "tuist_repo_pool_db_connection_disconnected", pool="p") == 1

    with engine.connect() as conn:
        conn.detach()  # closed when the Connection is: close_detached, one more
    assert sample_value(metrics(), "tuist_repo_pool_db_connection_disconnected", pool="p") == 2
    assert pool_series(metrics(), "p") == (0, 0, 0)

    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    assert pool_series(metrics(), "p") == (0, 1, 0)
    engine.dispose()  # closes the pooled connection and replaces engine.pool
    values = metrics()
    assert sample_value(values, "tuist_repo_pool_db_connection_disconnected", pool="p") == 3
    assert pool_series(values, "p") == (0, 0, 0)

    with engine.connect() as conn:  # the new pool is read, and still counted
        conn.execute(sa.text("SELECT 1"))
    values = metrics()
    assert pool_series(values, "p") == (0, 1, 0)
    assert sample_value(values, "tuist_repo_pool_db_connection_connected", pool="p") == 4
    engine.dispose()


def test_statement_kinds_and_durations(sync_url: str, registry: Registry) -> None:
    engine = create_engine(sync_url)
    if engine.dialect.name == "sqlite":
        @sa.event.listens_for(engine, "connect")
        def _sleep_function(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.create_function("pg_sleep", 1, lambda s: time.sleep(s))
    with engine.connect():
        pass  # the dialect's first-connect queries (version checks) are not this test's statements
    instrument_sqlalchemy(engine, pool_name="kinds", registry=registry)
    table = f"t_kinds_{int(time.time() * 1000)}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table} (x INTEGER)"))
        conn.execute(sa.text(f"INSERT INTO {table} (x) VALUES (:x)"), [{"x": 1}, {"x": 2}])  # executemany
        conn.execute(sa.text(f"/* why */ select x from {table}")).all()
        conn.execute(sa.text(f"UPDATE {table} SET x = 3"))
        conn.execute(sa.text(f"DELETE FROM {table} WHERE x = 3"))
        conn.execute(sa.text("SELECT pg_sleep(0.2)")).all()
        conn.execute(sa.text(f"DROP TABLE {table}"))
    for kind in ("INSERT", "UPDATE", "DELETE"):
        counts, total, n = query_hist(registry, "kinds", kind)
        assert n == 1 and 0 < total < 100, kind
    counts, total, n = query_hist(registry, "kinds", "SELECT")
    assert n == 2 and 200 <= total < 400
    assert counts[DB_MS.index(250)] == 1  # the 200 ms statement, in the (100, 250] bucket
    assert query_hist(registry, "kinds", "OTHER")[2] >= 2  # CREATE, DROP (+ BEGIN/COMMIT on some drivers)
    engine.dispose()


def test_statement_kind() -> None:
    assert statement_kind("SELECT 1") == "SELECT"
    assert statement_kind("  \n  select 1") == "SELECT"
    assert statement_kind("-- note\n/* a\n b */ (SELECT 1) UNION (SELECT 2)") == "SELECT"
    assert statement_kind("insert into t values (1)") == "INSERT"
    assert statement_kind("Update t set x = 1") == "UPDATE"
    assert statement_kind("DELETE FROM t") == "DELETE"
    assert statement_kind("WITH x AS (SELECT 1) SELECT * FROM x") == "OTHER"
    assert statement_kind("CREATE TABLE t (x int)") == "OTHER"
    assert statement_kind("") == "OTHER"
    assert statement_kind(b"SELECT 1") == "OTHER"
    assert statement_kind("SELECTION") == "OTHER"


def test_instrumenting_twice_never_double_counts(tmp_path: Path, registry: Registry) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'twice.db'}")
    instrument_sqlalchemy(engine, registry=registry)
    instrument_sqlalchemy(engine, registry=registry)
    async_engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'twice_async.db'}")
    instrument_sqlalchemy(async_engine, pool_name="a", registry=registry)
    instrument_sqlalchemy(async_engine.sync_engine, pool_name="a", registry=registry)  # the same engine

    async def use_async() -> None:
        async with async_engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        await async_engine.dispose()

    asyncio.run(use_async())
    assert query_hist(registry, "a", "SELECT")[2] == 1
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    pool = f"sqlite://:/{tmp_path / 'twice.db'}"  # the default name: driver://host:port/database
    assert query_hist(registry, pool, "SELECT")[2] == 1
    assert counter(registry, "tuist_repo_pool_db_connection_connected", pool) == 1
    engine.dispose()


def test_unsupported_types_raise_type_error_naming_what_is_accepted() -> None:
    with pytest.raises(TypeError, match=r"sqlalchemy Engine, an AsyncEngine or None .*not str"):
        instrument_sqlalchemy("sqlite://")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Engine"):
        uninstrument_sqlalchemy(object())  # type: ignore[arg-type]


def test_engines_created_later(tmp_path: Path, registry: Registry) -> None:
    existing = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    instrument_sqlalchemy(pool_name="later", registry=registry)
    new = create_engine(f"sqlite:///{tmp_path / 'new.db'}")  # a create_engine imported before the patch
    new_async = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'new_async.db'}")
    assert set(instrumented_engines()) == {new, new_async.sync_engine}
    for engine in (existing, new):
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    async def use_async() -> None:
        async with new_async.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        await new_async.dispose()

    asyncio.run(use_async())
    assert query_hist(registry, "later", "SELECT")[2] == 2
    uninstrument_sqlalchemy()
    assert instrumented_engines() == []
    assert "do_execute" not in vars(new.dialect)  # the dialect is as it was
    with new.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    with create_engine(f"sqlite:///{tmp_path / 'after.db'}").connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    assert query_hist(registry, "later", "SELECT")[2] == 2
    for engine in (existing, new):
        engine.dispose()


def test_failing_recording_never_breaks_the_query(tmp_path: Path, registry: Registry,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'fail.db'}")
    instrument_sqlalchemy(engine, pool_name="f", registry=registry)
    def broken(self: HistogramCell, value: float) -> None:
        raise RuntimeError("registry exploded")

    monkeypatch.setattr(HistogramCell, "observe", broken)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 41 + 1")).scalar() == 42
    engine.dispose()


def test_spans_and_standard_connection_usage(tmp_path: Path, registry: Registry) -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    engine = create_engine(f"sqlite:///{tmp_path / 'spans.db'}")
    instrument_sqlalchemy(engine, pool_name="s", registry=registry, tracer_provider=tracer_provider,
                          meter_provider=meter_provider)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
        usage = {(p.attributes["pool.name"], p.attributes["state"]): p.value
                 for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
                 for m in sm.metrics if m.name == "db.client.connections.usage" for p in m.data.data_points}
        assert usage[("s", "used")] == 1 and usage[("s", "idle")] == 0
    assert [s.name for s in exporter.get_finished_spans()] == [f"SELECT {tmp_path / 'spans.db'}"]
    uninstrument_sqlalchemy(engine)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 2"))
    assert len(exporter.get_finished_spans()) == 1  # the span listeners are gone with the rest
    engine.dispose()


def test_no_spans_by_default_without_a_tracer_provider(tmp_path: Path, registry: Registry) -> None:
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    before = len(EngineTracer._remove_event_listener_params)
    engine = create_engine(f"sqlite:///{tmp_path / 'nospans.db'}")
    instrument_sqlalchemy(engine, registry=registry)
    assert len(EngineTracer._remove_event_listener_params) == before
    instrument_sqlalchemy(create_engine(f"sqlite:///{tmp_path / 'spans.db'}"), registry=registry, spans=True)
    assert len(EngineTracer._remove_event_listener_params) == before + 7
    engine.dispose()
