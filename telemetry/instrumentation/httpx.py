"""httpx (httpcore) client metrics: ``instrument_httpx`` / ``uninstrument_httpx``.

For each instrumented ``httpx.Client`` or ``httpx.AsyncClient`` every transport that owns an httpcore pool
(the client's own and its mounts) has its ``handle_request``/``handle_async_request`` wrapped. The wrapper
puts a ``trace`` extension on the request (chaining one the caller set), and wraps the response stream so the
request is recorded when the response is closed, body included:

- ``tuist_http_request_count`` and ``tuist_http_request_duration_nanosecond{method,host,status}``: from
  entering the transport until the response is closed; ``status`` is the HTTP status code, or an error kind
  (``_http_exchange.ERROR_KIND_VALUES``) when no response arrived or the body failed part-way;
- ``tuist_http_queue_*``, ``tuist_http_connection_*``, ``tuist_http_send_*``, ``tuist_http_receive_*``
  (``{host}``): the phases described in ``_http_exchange``; ``tuist_http_queue_idle_time_nanoseconds``: how long
  the connection that served the request had been idle since it last released a response (0 for a new one);
- ``tuist_http_queue_available_connections`` / ``_in_use_connections{host}``: idle and busy connections of
  every instrumented pool, read at collection time.

opentelemetry-instrumentation-httpx adds spans and ``http.client.duration``. Its wrapper costs about a fifth
of a loopback request even with no tracer configured, so by default it is attached only when a tracer provider
is passed or an SDK tracer provider is installed globally (``spans=True``/``False`` decides explicitly).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from telemetry.catalogue import (
    HTTP_AVAILABLE,
    HTTP_IN_USE,
    HTTP_PHASES,
    HTTP_QUEUE_IDLE_TIME,
    HTTP_REQUEST_COUNT,
    HTTP_REQUEST_DURATION,
    http_phase_names,
)
from telemetry.instrumentation import tracing_configured
from telemetry.instrumentation._http_exchange import Exchange, error_kind, log_failure
from telemetry.registry import CounterChild, GaugeFamily, HistogramChild, Registry, default_registry

__all__ = ["instrument_httpx", "instrumented_clients", "uninstrument_httpx"]

_log = logging.getLogger(__name__)

_RELEASED = "_tuist_telemetry_released_ns"  # set on httpcore's network stream when a response is closed
_CACHE_LIMIT = 1000

_lock = threading.RLock()
_clients: weakref.WeakKeyDictionary[httpx.Client | httpx.AsyncClient, _ClientInstrumentation] = (
    weakref.WeakKeyDictionary())
_recorders: dict[int, Recorder] = {}
_global: dict[str, Any] = {}
_original_inits: dict[type[Any], Callable[..., None]] = {}


class _HostSeries:
    """The pre-bound series of one host, so recording a request resolves no labels."""

    __slots__ = ("counts", "durations", "idle")

    def __init__(self, registry: Registry, host: str) -> None:
        self.counts: tuple[CounterChild, ...] = tuple(
            registry.counter(http_phase_names(p)[0]).labels(host) for p in HTTP_PHASES)
        self.durations: tuple[HistogramChild, ...] = tuple(
            registry.histogram(http_phase_names(p)[1]).labels(host) for p in HTTP_PHASES)
        self.idle: HistogramChild = registry.histogram(HTTP_QUEUE_IDLE_TIME).labels(host)


class Recorder:
    """Turns finished exchanges into measurements on one registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._requests: dict[tuple[str, str, str], tuple[CounterChild, HistogramChild]] = {}
        self._hosts: dict[str, _HostSeries] = {}
        self._count = registry.counter(HTTP_REQUEST_COUNT)
        self._duration = registry.histogram(HTTP_REQUEST_DURATION)

    def _request_series(self, method: str, host: str, status: str) -> tuple[CounterChild, HistogramChild]:
        key = (method, host, status)
        series = self._requests.get(key)
        if series is None:
            series = (self._count.labels(method, host, status), self._duration.labels(method, host, status))
            if len(self._requests) < _CACHE_LIMIT:
                self._requests[key] = series
        return series

    def _host_series(self, host: str) -> _HostSeries:
        series = self._hosts.get(host)
        if series is None:
            series = _HostSeries(self.registry, host)
            if len(self._hosts) < _CACHE_LIMIT:
                self._hosts[host] = series
        return series

    def finish(self, ex: Exchange) -> None:
        """Record ``ex`` once: at response close, or when the transport raised."""
        if ex.finished:
            return
        ex.finished = True
        try:
            now = time.perf_counter_ns()
            start = ex.start
            first = ex.first
            count, duration = self._request_series(ex.method, ex.host, ex.error or ex.status or "other")
            count.inc()
            duration.observe(now - start)
            host = self._host_series(ex.host)
            counts, durations = host.counts, host.durations
            if first:
                counts[0].inc()
                durations[0].observe(first - start)
            connected = ex.connected
            if connected:
                counts[1].inc()
                durations[1].observe(ex.connect_ns)
            if ex.sent:
                counts[2].inc()
                durations[2].observe(ex.send_ns)
            if ex.headers_received:
                counts[3].inc()
                durations[3].observe(ex.receive_ns)
            stream = ex.stream
            if stream is not None:
                if connected:
                    host.idle.observe(0)
                else:
                    released = getattr(stream, _RELEASED, None)
                    if released is not None and first > released:
                        host.idle.observe(first - released)
                # a stream type that takes no attributes just gets no idle time for its connection
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(stream, _RELEASED, now)
        except Exception:
            log_failure("recording an httpx request")


def _recorder(registry: Registry) -> Recorder:
    with _lock:
        recorder = _recorders.get(id(registry))
        if recorder is None or recorder.registry is not registry:
            recorder = _recorders[id(registry)] = Recorder(registry)
            _hook_pool_gauges(registry)
        return recorder


class _MeteredStream(httpx.SyncByteStream):
    """The response body; closing it ends the request's measurement."""

    def __init__(self, inner: httpx.SyncByteStream, ex: Exchange, recorder: Recorder) -> None:
        self._inner = inner
        self._ex = ex
        self._recorder = recorder

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._inner
        except GeneratorExit:  # the caller stopped reading early: not a failure
            raise
        except BaseException as exc:
            self._ex.error = error_kind(exc)
            raise

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._recorder.finish(self._ex)


class _AsyncMeteredStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, ex: Exchange, recorder: Recorder) -> None:
        self._inner = inner
        self._ex = ex
        self._recorder = recorder

    async def __aiter__(self) -> Any:
        try:
            async for part in self._inner:
                yield part
        except GeneratorExit:
            raise
        except BaseException as exc:
            self._ex.error = error_kind(exc)
            raise

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._recorder.finish(self._ex)


def _begin(request: httpx.Request, asynchronous: bool) -> Exchange:
    extensions = request.extensions
    user = extensions.get("trace")
    owner = getattr(user, "__self__", None)
    if isinstance(owner, Exchange):  # a request sent again: never chain a finished exchange's callback
        user = owner.user_trace
    ex = Exchange(request.method, request.url.raw_host.decode("ascii", "replace"), user)
    extensions["trace"] = ex.atrace if asynchronous else ex.trace if user is not None else ex.observe
    return ex


def _status(response: httpx.Response, ex: Exchange) -> None:
    ex.status = str(response.status_code)
    ex.stream = response.extensions.get("network_stream")


def _wrap_sync(original: Callable[[httpx.Request], httpx.Response], recorder: Recorder,
               state: _TransportPatch) -> Callable[[httpx.Request], httpx.Response]:
    def handle_request(request: httpx.Request) -> httpx.Response:
        if not state.active:
            return original(request)
        try:
            ex = _begin(request, False)
        except Exception:
            log_failure("starting to measure an httpx request")
            return original(request)
        try:
            response = original(request)
        except BaseException as exc:
            ex.error = error_kind(exc)
            recorder.finish(ex)
            raise
        try:
            _status(response, ex)
            response.stream = _MeteredStream(response.stream, ex, recorder)  # type: ignore[arg-type]
        except Exception:
            log_failure("measuring an httpx response")
        return response
    return handle_request


def _wrap_async(original: Callable[[httpx.Request], Any], recorder: Recorder,
                state: _TransportPatch) -> Callable[[httpx.Request], Any]:
    async def handle_async_request(request: httpx.Request) -> httpx.Response:
        if not state.active:
            return await original(request)  # type: ignore[no-any-return]
        try:
            ex = _begin(request, True)
        except Exception:
            log_failure("starting to measure an httpx request")
            return await original(request)  # type: ignore[no-any-return]
        try:
            response: httpx.Response = await original(request)
        except BaseException as exc:
            ex.error = error_kind(exc)
            recorder.finish(ex)
            raise
        try:
            _status(response, ex)
            response.stream = _AsyncMeteredStream(response.stream, ex, recorder)  # type: ignore[arg-type]
        except Exception:
            log_failure("measuring an httpx response")
        return response
    return handle_async_request


class _TransportPatch:
    """Our wrapper on one transport's ``handle_request``; ``remove`` restores what was there."""

    def __init__(self, transport: Any, recorder: Recorder) -> None:
        self.transport = transport
        self.active = True
        self.attr = "handle_async_request" if isinstance(transport, httpx.AsyncBaseTransport) else "handle_request"
        self.previous = vars(transport).get(self.attr)  # an instance-level wrapper (upstream's), or None
        original = getattr(transport, self.attr)
        wrap = _wrap_async if self.attr == "handle_async_request" else _wrap_sync
        self.wrapper = wrap(original, recorder, self)
        setattr(transport, self.attr, self.wrapper)

    def remove(self) -> None:
        self.active = False  # if someone wrapped on top of us, we stay in their chain as a pass-through
        if vars(self.transport).get(self.attr) is self.wrapper:
            if self.previous is None:
                delattr(self.transport, self.attr)
            else:
                setattr(self.transport, self.attr, self.previous)


def _pooled_transports(client: httpx.Client | httpx.AsyncClient) -> list[Any]:
    transports = [client._transport, *client._mounts.values()]
    return [t for t in transports if t is not None and hasattr(t, "_pool")]


class _ClientInstrumentation:
    def __init__(self, client: httpx.Client | httpx.AsyncClient, recorder: Recorder, meter_provider: Any,
                 tracer_provider: Any, spans: bool | None) -> None:
        self.recorder = recorder
        self.upstream = False
        if spans or (spans is None and tracing_configured(tracer_provider)):
            from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

            if not getattr(client, "_is_instrumented_by_opentelemetry", False):
                HTTPXClientInstrumentor.instrument_client(client, tracer_provider=tracer_provider,
                                                          meter_provider=meter_provider)
                self.upstream = True
        self.pools = [t._pool for t in _pooled_transports(client)]
        self.patches = [_TransportPatch(t, recorder) for t in _pooled_transports(client)]

    def remove(self, client: httpx.Client | httpx.AsyncClient) -> None:
        for patch in self.patches:
            patch.remove()
        if self.upstream:
            from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

            HTTPXClientInstrumentor.uninstrument_client(client)


# pool gauges ------------------------------------------------------------------------------------------------
def _pool_counts(registry: Registry) -> dict[str, tuple[int, int]]:
    """host -> (idle, in use) over every pool instrumented on ``registry``."""
    with _lock:
        pools = [pool for inst in list(_clients.values()) if inst.recorder.registry is registry
                 for pool in inst.pools]
    counts: dict[str, tuple[int, int]] = {}
    for pool in pools:
        for conn in list(getattr(pool, "_connections", ())):  # the pool's own list, not a copy per read
            origin = getattr(conn, "_origin", None)
            if origin is None:
                continue
            host = origin.host.decode("ascii", "replace")
            idle, used = counts.get(host, (0, 0))
            if conn.is_closed():
                continue
            if conn.is_idle():
                idle += 1
            else:
                used += 1
            counts[host] = (idle, used)
    return counts


def _hook_pool_gauges(registry: Registry) -> None:
    seen: set[str] = set()  # hosts reported before read 0 once their connections are gone

    def read(index: int) -> Callable[[], list[tuple[tuple[str], float]]]:
        def callback() -> list[tuple[tuple[str], float]]:
            counts = _pool_counts(registry)
            with _lock:
                seen.update(counts)
                hosts = sorted(seen)
            return [((host,), counts.get(host, (0, 0))[index]) for host in hosts]
        return callback

    available: GaugeFamily = registry.gauge(HTTP_AVAILABLE)
    in_use: GaugeFamily = registry.gauge(HTTP_IN_USE)
    available.add_callback(read(0))
    in_use.add_callback(read(1))


# public API -------------------------------------------------------------------------------------------------
def _instrument_client(client: httpx.Client | httpx.AsyncClient, registry: Registry, meter_provider: Any,
                       tracer_provider: Any, spans: bool | None) -> None:
    with _lock:
        if client in _clients:
            return  # instrumenting twice must never double-count
        _clients[client] = _ClientInstrumentation(client, _recorder(registry), meter_provider, tracer_provider,
                                                  spans)


def _patched_init(cls: type[Any]) -> Callable[..., None]:
    original = cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        options = dict(_global)
        if options:
            try:
                _instrument_client(self, **options)
            except Exception:  # a new client must work even when its instrumentation cannot be attached
                log_failure("instrumenting a new httpx client")
    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    return __init__


def instrument_httpx(client: httpx.Client | httpx.AsyncClient | None = None, *, registry: Registry | None = None,
                     meter_provider: Any = None, tracer_provider: Any = None, spans: bool | None = None) -> None:
    """Record the ``tuist_http_*`` metrics for ``client``, or, with ``client=None``, for every
    ``httpx.Client``/``httpx.AsyncClient`` created afterwards (existing clients are left alone).

    ``spans``: also attach opentelemetry-instrumentation-httpx (spans and ``http.client.duration``); None (the
    default) attaches it only when a tracer provider is passed or an SDK tracer provider is installed
    globally. Idempotent per client; raises ``TypeError`` for anything but an httpx client or None.
    """
    registry = registry or default_registry()
    if client is None:
        with _lock:
            _global.update(registry=registry, meter_provider=meter_provider, tracer_provider=tracer_provider,
                           spans=spans)
            for cls in (httpx.Client, httpx.AsyncClient):
                if cls not in _original_inits:
                    _original_inits[cls] = cls.__init__
                    cls.__init__ = _patched_init(cls)  # type: ignore[method-assign]
        return
    if not isinstance(client, (httpx.Client, httpx.AsyncClient)):
        raise TypeError("instrument_httpx() accepts an httpx.Client, an httpx.AsyncClient or None (clients "
                        f"created later), not {type(client).__name__}")
    _instrument_client(client, registry, meter_provider, tracer_provider, spans)


def uninstrument_httpx(client: httpx.Client | httpx.AsyncClient | None = None) -> None:
    """Take the instrumentation off ``client``; with None, stop instrumenting new clients and take it off
    every client this module instrumented. Recorded series stay (counters are cumulative)."""
    with _lock:
        if client is None:
            for cls, original in _original_inits.items():
                cls.__init__ = original
            _original_inits.clear()
            _global.clear()
            targets = list(_clients.items())
        else:
            if not isinstance(client, (httpx.Client, httpx.AsyncClient)):
                raise TypeError("uninstrument_httpx() accepts an httpx.Client, an httpx.AsyncClient or None, "
                                f"not {type(client).__name__}")
            inst = _clients.get(client)
            targets = [(client, inst)] if inst is not None else []
        for target, inst in targets:
            _clients.pop(target, None)
            inst.remove(target)


def instrumented_clients() -> list[httpx.Client | httpx.AsyncClient]:
    """The clients currently instrumented."""
    with _lock:
        return list(_clients.keys())
