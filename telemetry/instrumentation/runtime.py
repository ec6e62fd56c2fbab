"""Process and CPython runtime metrics (the counterpart of the doc's BEAM and Application sections).

Observable OpenTelemetry instruments read at collection time, one per family of the catalogue's ``RUNTIME``
table: the OpenTelemetry semantic-convention names (``process_cpu_time_seconds_total``,
``process_memory_usage_bytes``, ``cpython_gc_collections_total``, ...), and prometheus_client's
``ProcessCollector`` names (``process_resident_memory_bytes``, ``process_cpu_seconds_total``,
``process_open_fds``, ...) with its types and help, for the dashboards that query those. ``application_info``
and ``application_dependency_info`` carry versions as labels with the value 1, like PromEx's Application plugin.

Both sets come from one ``ProcessReader`` reading per collection (``telemetry.instrumentation.process``).
"""

from __future__ import annotations

import gc
import platform
import threading
import time
from collections.abc import Callable, Iterable
from importlib import metadata

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from telemetry import catalogue as cat
from telemetry.catalogue import Observable
from telemetry.instrumentation.process import ProcessReader, Reading

# The distributions whose versions the dependency info metric reports, when installed.
KEY_DEPENDENCIES = ("tuist-telemetry", "opentelemetry-api", "opentelemetry-sdk", "httpx", "httpcore",
                    "SQLAlchemy", "posthog", "sentry-sdk", "starlette", "uvicorn")


def _versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for name in KEY_DEPENDENCIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


class _OneReadingPerCollection:
    """The reading the callbacks of one collection share. The SDK runs each callback once per collection, one
    collection at a time per MeterProvider: a callback that asks again has started the next collection, so it
    takes a new reading, and the rest of that collection gets the same one."""

    def __init__(self, read: Callable[[], Reading]) -> None:
        self._read = read
        self._reading: Reading | None = None
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def get(self, who: str) -> Reading:
        with self._lock:
            if self._reading is None or who in self._seen:
                self._reading = self._read()
                self._seen = set()
            self._seen.add(who)
            return self._reading


class RuntimeMetrics:
    """Registers the runtime instruments on ``meter``; their callbacks run on each collection. ``process`` is
    where the process readings come from (``ProcessReader()``: /proc, else psutil, else the standard library)."""

    def __init__(self, meter: Meter, *, service_name: str = "", service_version: str = "", git_sha: str = "",
                 process: ProcessReader | None = None) -> None:
        self._process = process or ProcessReader()
        self._process.start_time()  # read now: on a later failure, the start is still known
        self._reading = _OneReadingPerCollection(self._process.read)
        info = {"service_name": service_name, "service_version": service_version, "git_sha": git_sha,
                "python_version": platform.python_version(),
                "python_implementation": platform.python_implementation()}
        self._info = {k: v for k, v in info.items() if v}  # an unset value is no label, not an empty one
        self._dependencies = _versions()
        # Families read from the process (one reading per collection, shared) and the others.
        from_reading: dict[str, Callable[[Reading], list[Observation]]] = {
            cat.PROCESS_CPU_TIME: lambda r: [Observation(r.cpu_user, {cat.CPU_MODE: "user"}),
                                             Observation(r.cpu_system, {cat.CPU_MODE: "system"})],
            cat.PROCESS_MEMORY_USAGE: lambda r: _known(r.resident_bytes),
            cat.PROCESS_OPEN_FILE_DESCRIPTORS: lambda r: _known(r.open_fds),
            cat.PROCESS_THREADS: lambda r: [Observation(r.threads)],
            cat.PROCESS_RESIDENT_MEMORY: lambda r: _known(r.resident_bytes),
            cat.PROCESS_VIRTUAL_MEMORY: lambda r: _known(r.virtual_bytes),
            cat.PROCESS_CPU_SECONDS: lambda r: [Observation(r.cpu_user + r.cpu_system)],
            cat.PROCESS_OPEN_FDS: lambda r: _known(r.open_fds),
            cat.PROCESS_MAX_FDS: lambda r: _known(r.max_fds),
        }
        others: dict[str, Callable[[CallbackOptions], Iterable[Observation]]] = {
            cat.CPYTHON_GC_COLLECTIONS: self._gc_collections,
            cat.CPYTHON_GC_COLLECTED: self._gc_collected,
            cat.PROCESS_START_TIME: self._start_time,
            cat.PROCESS_UPTIME: self._uptime,
            cat.APPLICATION_INFO: self._app_info,
            cat.APPLICATION_DEPENDENCY_INFO: self._dependency_info,
        }
        create = {Observable.COUNTER: meter.create_observable_counter,
                  Observable.UP_DOWN_COUNTER: meter.create_observable_up_down_counter,
                  Observable.GAUGE: meter.create_observable_gauge}
        for spec in cat.RUNTIME:
            callback = others.get(spec.name) or self._from_reading(spec.name, from_reading[spec.name])
            create[spec.observable](spec.instrument, [callback], unit=spec.unit, description=spec.help)

    def _from_reading(self, name: str, observe: Callable[[Reading], list[Observation]]
                      ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return observe(self._reading.get(name))
        return callback

    def _gc_collections(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s["collections"], {cat.GC_GENERATION: g}) for g, s in enumerate(gc.get_stats())]

    def _gc_collected(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s["collected"], {cat.GC_GENERATION: g}) for g, s in enumerate(gc.get_stats())]

    def _start_time(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._process.start_time())]

    def _uptime(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(time.time() - self._process.start_time())]

    def _app_info(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(1, self._info)]

    def _dependency_info(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(1, {cat.DEPENDENCY_NAME: n, cat.DEPENDENCY_VERSION: v})
                for n, v in self._dependencies.items()]


def _known(value: int | None) -> list[Observation]:
    """No point where the platform cannot tell (rather than a 0 that looks like a reading)."""
    return [] if value is None else [Observation(value)]
