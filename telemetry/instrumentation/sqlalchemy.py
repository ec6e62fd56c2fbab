"""SQLAlchemy database pool metrics: ``instrument_sqlalchemy`` / ``uninstrument_sqlalchemy``.

For each instrumented engine (sync ``Engine`` or ``AsyncEngine``) this records, under a ``pool`` label:

- ``tuist_repo_pool_db_connection_connected`` / ``_disconnected``: the pool's ``connect`` events, and its
  ``close`` and ``close_detached`` events (a hard invalidation closes the connection, so it counts once, as a
  close; a soft invalidation counts when the connection is recycled);
- ``tuist_repo_pool_ready_conn_count``, ``db_connections_active``, ``tuist_repo_pool_checkout_queue_length``:
  gauges read from ``engine.pool`` when metrics are collected (``dispose()`` replaces the pool, so it is looked
  up each time; see ``_db_pool`` for how waiting callers are counted);
- ``tuist_repo_query_duration_milliseconds{pool,statement}``: the time the DBAPI spent in ``execute``, timed
  around the dialect's ``do_execute``/``do_executemany``/``do_execute_no_params``.

It also exposes OpenTelemetry's standard ``db.client.connections.usage{pool.name,state}``, read from the pool
at collection time rather than counted on every checkout (the upstream package's up-down counter costs more
than the query it counts, and drifts when a pool is disposed), and, when spans are wanted, attaches
opentelemetry-instrumentation-sqlalchemy's ``EngineTracer`` for query spans. Spans cost about as much as a
``SELECT 1`` on SQLite even with no tracer configured, so by default they are attached only when a tracer
provider is given or an SDK one is installed globally.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from telemetry.catalogue import (
    DB_CONNECTIONS_ACTIVE,
    REPO_CHECKOUT_QUEUE,
    REPO_CONNECTED,
    REPO_DISCONNECTED,
    REPO_QUERY_DURATION,
    REPO_READY,
    STATEMENT_KINDS,
)
from telemetry.instrumentation import tracing_configured
from telemetry.instrumentation._db_pool import KIND_CACHE, pool_state, statement_kind
from telemetry.registry import CounterChild, GaugeFamily, HistogramChild, Registry, default_registry

__all__ = ["instrument_sqlalchemy", "instrumented_engines", "uninstrument_sqlalchemy"]

_log = logging.getLogger(__name__)

_EXECUTE_METHODS = ("do_execute", "do_executemany", "do_execute_no_params")
_SCOPE = "telemetry.instrumentation.sqlalchemy"

_lock = threading.RLock()
_engines: weakref.WeakKeyDictionary[Engine, _EngineInstrumentation] = weakref.WeakKeyDictionary()
_registry_hooks: dict[int, tuple[Registry, list[Callable[[], None]]]] = {}
# id(meter provider) -> (the provider, kept so its id cannot be reused, and the instrument registered on it)
_usage_meters: dict[int, tuple[Any, Any]] = {}
_reported: dict[tuple[int, str], set[str]] = {}  # (id(registry), metric) -> pool names ever reported
_global_patch: dict[str, Any] = {}  # the options engines created later are instrumented with


def _default_pool_name(engine: Engine) -> str:
    """The pool's logging name, else ``driver://host:port/database`` (the upstream package's pool.name)."""
    name = getattr(engine.pool, "logging_name", None)
    if name:
        return str(name)
    url = engine.url
    return f"{url.drivername}://{url.host or ''}:{url.port or ''}/{url.database or ''}"


class _EngineInstrumentation:
    """What one ``instrument_sqlalchemy`` call attached to one engine, so it can all be taken off again."""

    def __init__(self, engine: Engine, pool_name: str, registry: Registry, meter_provider: Any,
                 tracer_provider: Any, spans: bool | None) -> None:
        self.engine_ref = weakref.ref(engine)
        self.pool_name = pool_name
        self.registry = registry
        self._connected: CounterChild = registry.counter(REPO_CONNECTED).labels(pool_name)
        self._disconnected: CounterChild = registry.counter(REPO_DISCONNECTED).labels(pool_name)
        durations = registry.histogram(REPO_QUERY_DURATION)
        self._durations: dict[str, HistogramChild] = {k: durations.labels(pool_name, k)
                                                      for k in sorted(STATEMENT_KINDS)}
        self._listeners: list[tuple[str, Callable[..., None]]] = [
            ("connect", self._on_connect), ("close", self._on_close), ("close_detached", self._on_close_detached)]
        for name, fn in self._listeners:
            event.listen(engine, name, fn)
        self._dialect = engine.dialect
        self._replaced: dict[str, Any] = {}
        for method in _EXECUTE_METHODS:
            self._replaced[method] = vars(self._dialect).get(method)  # an instance attribute someone else set
            setattr(self._dialect, method, self._timed(getattr(self._dialect, method), method))
        self._tracer: Any = None
        if spans or (spans is None and tracing_configured(tracer_provider)):
            self._tracer = _attach_engine_tracer(engine, tracer_provider)
        self.meter_key = _register_usage_gauge(meter_provider)

    # pool events ------------------------------------------------------------------------------------------
    def _on_connect(self, dbapi_connection: Any, record: Any) -> None:
        self._connected.inc()

    def _on_close(self, dbapi_connection: Any, record: Any) -> None:
        self._disconnected.inc()

    def _on_close_detached(self, dbapi_connection: Any) -> None:
        self._disconnected.inc()

    # statement timing -------------------------------------------------------------------------------------
    def _timed(self, original: Callable[..., Any], method: str) -> Callable[..., Any]:
        """``original`` timed. Spelled out per signature and without ``*args``: this runs on every statement,
        and the cheapest statement (SQLite ``SELECT 1``) takes about 25 µs."""
        durations = self._durations
        clock = time.perf_counter_ns
        kinds = KIND_CACHE

        def record(statement: Any, elapsed: int) -> None:
            try:
                durations[kinds.get(statement) or statement_kind(statement)].observe(elapsed / 1e6)
            except Exception:  # recording must never fail the caller's query
                _log.debug("query duration not recorded", exc_info=True)

        timed: Callable[..., Any]
        if method == "do_execute_no_params":
            def timed_no_params(cursor: Any, statement: Any, context: Any = None) -> Any:
                start = clock()
                try:
                    result = original(cursor, statement, context)
                except BaseException:
                    record(statement, clock() - start)
                    raise
                elapsed = clock() - start
                try:
                    durations[kinds.get(statement) or statement_kind(statement)].observe_measured(elapsed / 1e6)
                except Exception:
                    _log.debug("query duration not recorded", exc_info=True)
                return result
            timed = timed_no_params
        else:
            def timed_with_params(cursor: Any, statement: Any, parameters: Any, context: Any = None) -> Any:
                start = clock()
                try:
                    result = original(cursor, statement, parameters, context)
                except BaseException:
                    record(statement, clock() - start)
                    raise
                elapsed = clock() - start
                try:  # inline rather than record(): one call less on every statement
                    durations[kinds.get(statement) or statement_kind(statement)].observe_measured(elapsed / 1e6)
                except Exception:
                    _log.debug("query duration not recorded", exc_info=True)
                return result
            timed = timed_with_params
        timed.__wrapped__ = original  # type: ignore[union-attr]
        return timed

    def remove(self, engine: Engine | None) -> None:
        if engine is not None:
            for name, fn in self._listeners:
                if event.contains(engine, name, fn):
                    event.remove(engine, name, fn)
            if self._tracer is not None:
                _detach_engine_tracer(engine, self._tracer)
        for method, previous in self._replaced.items():
            if previous is None:
                vars(self._dialect).pop(method, None)
            else:
                setattr(self._dialect, method, previous)


def _attach_engine_tracer(engine: Engine, tracer_provider: Any) -> Any:
    """opentelemetry-instrumentation-sqlalchemy's query spans for this engine (its usage counter muted: the
    observable gauge below reports the same metric without a cost per checkout)."""
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.instrumentation.sqlalchemy.version import __version__

    tracer = trace.get_tracer("opentelemetry.instrumentation.sqlalchemy", __version__, tracer_provider)
    muted = metrics.NoOpUpDownCounter("db.client.connections.usage")
    return EngineTracer(tracer, engine, muted)  # type: ignore[no-untyped-call]


def _detach_engine_tracer(engine: Engine, engine_tracer: Any) -> None:
    """Remove the listeners ``EngineTracer`` registered on this engine only (its own API removes all)."""
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    params = EngineTracer._remove_event_listener_params
    for entry in list(params):
        target_ref, identifier, fn = entry
        if target_ref() is engine and getattr(fn, "__self__", engine_tracer) is engine_tracer:
            if event.contains(engine, identifier, fn):
                event.remove(engine, identifier, fn)
            params.remove(entry)


def _register_usage_gauge(meter_provider: Any) -> int:
    """One ``db.client.connections.usage`` instrument per meter provider, reading every instrumented pool."""
    from opentelemetry.semconv.metrics import MetricInstruments

    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    with _lock:
        key = id(provider)
        if key not in _usage_meters:
            meter = provider.get_meter(_SCOPE)
            _usage_meters[key] = (provider, meter.create_observable_up_down_counter(
                MetricInstruments.DB_CLIENT_CONNECTIONS_USAGE, [_usage_observations(key)], unit="connections",
                description="The number of connections that are currently in state described by the state "
                            "attribute."))
        return key


def _pool_states(registry: Registry | None = None, meter_key: int | None = None,
                 ) -> Iterator[tuple[str, Registry, Any]]:
    with _lock:
        items = list(_engines.items())
    for engine, inst in items:
        if (registry is not None and inst.registry is not registry) or (
                meter_key is not None and inst.meter_key != meter_key):
            continue
        state = pool_state(engine.pool)  # engine.pool now: dispose() replaces it
        if state is not None:
            yield inst.pool_name, inst.registry, state


def _usage_observations(meter_key: int) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        idle: dict[str, int] = {}
        used: dict[str, int] = {}
        for name, _, state in _pool_states(meter_key=meter_key):
            idle[name] = idle.get(name, 0) + state.ready
            used[name] = used.get(name, 0) + state.active
        out = [Observation(v, {"pool.name": n, "state": "idle"}) for n, v in idle.items()]
        out += [Observation(v, {"pool.name": n, "state": "used"}) for n, v in used.items()]
        return out
    return observe


def _gauge_callback(registry: Registry, metric: str, field: str) -> Callable[[], list[tuple[tuple[str], float]]]:
    key = (id(registry), metric)

    def read() -> list[tuple[tuple[str], float]]:
        totals: dict[str, float] = {}
        for name, _, state in _pool_states(registry):
            totals[name] = totals.get(name, 0) + getattr(state, field)
        with _lock:
            seen = _reported.setdefault(key, set())
            seen.update(totals)
            # a pool that went away (uninstrumented, garbage collected) reads 0 rather than its last value
            return [((name,), totals.get(name, 0)) for name in sorted(seen)]
    return read


def _hook_registry(registry: Registry) -> None:
    with _lock:
        if id(registry) in _registry_hooks:
            return
        removers = []
        gauges = ((REPO_READY, "ready"), (DB_CONNECTIONS_ACTIVE, "active"), (REPO_CHECKOUT_QUEUE, "waiting"))
        for metric, field in gauges:
            family: GaugeFamily = registry.gauge(metric)
            removers.append(family.add_callback(_gauge_callback(registry, metric, field)))
        _registry_hooks[id(registry)] = (registry, removers)


def _sync_engine(engine: object) -> Engine:
    if isinstance(engine, AsyncEngine):
        return engine.sync_engine
    if isinstance(engine, Engine):
        return engine
    raise TypeError("instrument_sqlalchemy() accepts a sqlalchemy Engine, an AsyncEngine or None (engines "
                    f"created later), not {type(engine).__name__}")


def _instrument_engine(engine: Engine, pool_name: str | None, registry: Registry, meter_provider: Any,
                       tracer_provider: Any, spans: bool | None) -> None:
    with _lock:
        if engine in _engines:
            return  # instrumenting twice must never double-count
        _hook_registry(registry)
        _engines[engine] = _EngineInstrumentation(engine, pool_name or _default_pool_name(engine), registry,
                                                  meter_provider, tracer_provider, spans)


_original_engine_init: Any = None


def _patched_engine_init(self: Engine, *args: Any, **kwargs: Any) -> None:
    _original_engine_init(self, *args, **kwargs)
    options = dict(_global_patch)
    if not options:
        return
    try:
        _instrument_engine(self, **options)
    except Exception:  # a new engine must work even when its instrumentation cannot be attached
        _log.exception("could not instrument a new SQLAlchemy engine")


def instrument_sqlalchemy(engine: Engine | AsyncEngine | None = None, *, pool_name: str | None = None,
                          registry: Registry | None = None, meter_provider: Any = None,
                          tracer_provider: Any = None, spans: bool | None = None) -> None:
    """Record pool and query metrics for ``engine``, or, with ``engine=None``, for every engine created
    afterwards (``Engine.__init__`` is patched, so engines from a ``create_engine`` imported earlier are
    covered too; existing engines are left alone).

    ``pool_name`` labels the series (default: the pool's logging name, else ``driver://host:port/database``).
    ``spans``: attach the upstream package's query spans; None (default) attaches them only when a tracer
    provider is passed or an SDK tracer provider is installed globally. Idempotent per engine; raises
    ``TypeError`` for anything but an ``Engine``, an ``AsyncEngine`` or None.
    """
    registry = registry or default_registry()
    if engine is None:
        global _original_engine_init
        with _lock:
            _global_patch.update(pool_name=pool_name, registry=registry, meter_provider=meter_provider,
                                 tracer_provider=tracer_provider, spans=spans)
            if _original_engine_init is None:
                _original_engine_init = Engine.__init__
                Engine.__init__ = _patched_engine_init  # type: ignore[method-assign]
        return
    _instrument_engine(_sync_engine(engine), pool_name, registry, meter_provider, tracer_provider, spans)


def uninstrument_sqlalchemy(engine: Engine | AsyncEngine | None = None) -> None:
    """Take the instrumentation off ``engine``; with None, stop instrumenting new engines and take it off
    every engine this module instrumented. Series already recorded stay (counters are cumulative)."""
    global _original_engine_init
    with _lock:
        if engine is None:
            if _original_engine_init is not None:
                Engine.__init__ = _original_engine_init  # type: ignore[method-assign]
                _original_engine_init = None
            _global_patch.clear()
            targets = list(_engines.items())
        else:
            sync = _sync_engine(engine)
            inst = _engines.get(sync)
            targets = [(sync, inst)] if inst is not None else []
        for target, inst in targets:
            _engines.pop(target, None)
            inst.remove(target)


def instrumented_engines() -> list[Engine]:
    """The engines currently instrumented (sync engines; an ``AsyncEngine`` appears as its ``sync_engine``)."""
    with _lock:
        return list(_engines.keys())
