"""Process and CPython runtime metrics (the counterpart of the doc's BEAM and Application sections).

Observable OpenTelemetry instruments read at collection time, named after the OpenTelemetry semantic
conventions, so the exposition shows them with the standard naming (``process_cpu_time_seconds_total``,
``process_memory_usage_bytes``, ``cpython_gc_collections_total``, ...). ``application_info`` and
``application_dependency_info`` carry versions as labels with the value 1, like PromEx's Application plugin.
"""

from __future__ import annotations

import gc
import os
import platform
import threading
import time
from collections.abc import Iterable
from importlib import metadata

from opentelemetry.metrics import CallbackOptions, Meter, Observation

# The distributions whose versions the dependency info metric reports, when installed.
KEY_DEPENDENCIES = ("tuist-telemetry", "opentelemetry-api", "opentelemetry-sdk", "httpx", "httpcore",
                    "SQLAlchemy", "posthog", "sentry-sdk", "starlette", "uvicorn")

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except OSError:
        return None


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def _os_threads() -> int:
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return threading.active_count()


def _versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for name in KEY_DEPENDENCIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


class RuntimeMetrics:
    """Registers the runtime instruments on ``meter``; their callbacks run on each collection."""

    def __init__(self, meter: Meter, *, service_name: str = "", service_version: str = "", git_sha: str = "") -> None:
        self._start = time.time()
        info = {"service_name": service_name, "service_version": service_version, "git_sha": git_sha,
                "python_version": platform.python_version(),
                "python_implementation": platform.python_implementation()}
        self._info = {k: v for k, v in info.items() if v}  # an unset value is no label, not an empty one
        self._dependencies = _versions()
        meter.create_observable_counter("process.cpu.time", [self._cpu], unit="s",
                                        description="CPU seconds used by this process, by mode.")
        meter.create_observable_up_down_counter("process.memory.usage", [self._memory], unit="By",
                                                description="Resident memory of this process.")
        meter.create_observable_up_down_counter("process.open_file_descriptor.count", [self._fds],
                                                unit="{file_descriptor}",
                                                description="Open file descriptors of this process.")
        meter.create_observable_up_down_counter("process.thread.count", [self._threads], unit="{thread}",
                                                description="OS threads of this process.")
        meter.create_observable_counter("cpython.gc.collections", [self._gc_collections], unit="{collection}",
                                        description="Garbage collector runs, by generation.")
        meter.create_observable_counter("cpython.gc.collected_objects", [self._gc_collected], unit="{object}",
                                        description="Objects collected by the garbage collector, by generation.")
        meter.create_observable_gauge("process.start_time", [self._start_time], unit="s",
                                      description="Start time of this process since the Unix epoch.")
        meter.create_observable_gauge("process.uptime", [self._uptime], unit="s",
                                      description="Seconds since this process started.")
        meter.create_observable_gauge("application.info", [self._app_info],
                                      description="Service, Python and build versions (value 1).")
        meter.create_observable_gauge("application.dependency.info", [self._dependency_info],
                                      description="Versions of key dependencies (value 1).")

    def _cpu(self, options: CallbackOptions) -> Iterable[Observation]:
        times = os.times()
        return [Observation(times.user, {"cpu.mode": "user"}), Observation(times.system, {"cpu.mode": "system"})]

    def _memory(self, options: CallbackOptions) -> Iterable[Observation]:
        rss = _rss_bytes()
        return [] if rss is None else [Observation(rss)]

    def _fds(self, options: CallbackOptions) -> Iterable[Observation]:
        fds = _open_fds()
        return [] if fds is None else [Observation(fds)]

    def _threads(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(_os_threads())]

    def _gc_collections(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s["collections"], {"cpython.gc.generation": g}) for g, s in enumerate(gc.get_stats())]

    def _gc_collected(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s["collected"], {"cpython.gc.generation": g}) for g, s in enumerate(gc.get_stats())]

    def _start_time(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._start)]

    def _uptime(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(time.time() - self._start)]

    def _app_info(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(1, self._info)]

    def _dependency_info(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(1, {"name": n, "version": v}) for n, v in self._dependencies.items()]
