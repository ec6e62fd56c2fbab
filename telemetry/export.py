"""Push readers whose exports, and so whose shutdown, take a bounded time.

Why the stock pieces block on shutdown: ``MeterProvider.shutdown()`` (default deadline 30 s) shuts its readers
down one after another. ``PeriodicExportingMetricReader.shutdown()`` wakes its daemon ticker thread, which runs
one last collect-and-export, and joins it until that deadline; only then does it call the exporter's
``shutdown()``. The exporter does not stop early on its own:

- ``OTLPMetricExporter`` ignores the ``timeout_millis`` it is handed and retries connection errors and 429/502/
  503/504 with backoffs of 1, 2, 4, ... s (±20 %) until its own ``timeout`` (``OTEL_EXPORTER_OTLP_METRICS_TIMEOUT``
  or ``OTEL_EXPORTER_OTLP_TIMEOUT``, default 10 s) would pass. A refused port costs 1 + 2 + 4 s of backoff
  (~7.6 s measured); a receiver that accepts and never answers costs one 10 s read timeout. Its retry loop
  aborts on ``exporter.shutdown()``, which the reader calls only after the join.
- ``PrometheusRemoteWriteMetricsExporter`` also ignores ``timeout_millis``; one POST with ``timeout`` (default
  30 s), no retries.

So the bound comes from two things here: each exporter gets a short timeout of its own (``otlp_reader``,
``telemetry.remote_write.remote_write_reader``), and ``shutdown_provider`` gives the whole provider shutdown a
deadline, running it on a daemon thread and returning when the deadline passes even if a reader ignores it.
The final export still happens: when the receiver answers, it is delivered before ``shutdown_provider``
returns. The reader's ticker thread is a daemon thread too, so an export abandoned at the deadline never
keeps the process from exiting.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader

from telemetry.config import Settings

_log = logging.getLogger(__name__)

# One export attempt (every retry included) gives up after this long. A periodic export already under way
# when shutdown starts plus the final one fit twice into the default shutdown bound.
DEFAULT_EXPORT_TIMEOUT_S = 2.0
# The longest ``shutdown_provider`` waits for every reader's final export.
DEFAULT_SHUTDOWN_TIMEOUT_S = 5.0


def _positive(what: str, value: float) -> float:
    if not value > 0:  # also refuses NaN
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


def periodic_reader(exporter: MetricExporter, *, interval_s: float | None, timeout_s: float) -> \
        PeriodicExportingMetricReader:
    """The stock periodic reader around ``exporter``: every ``interval_s`` (None: OTEL_METRIC_EXPORT_INTERVAL,
    default 60 s), collections given ``timeout_s``."""
    interval_ms = None if interval_s is None else _positive("interval_s", interval_s) * 1000
    return PeriodicExportingMetricReader(exporter, export_interval_millis=interval_ms,
                                         export_timeout_millis=_positive("timeout_s", timeout_s) * 1000)


def otlp_timeout_s(timeout_s: float | None = None, *, settings: Settings | None = None) -> float:
    """``timeout_s``, else the standard OTLP timeout (OTEL_EXPORTER_OTLP_METRICS_TIMEOUT, then
    OTEL_EXPORTER_OTLP_TIMEOUT, in seconds) of ``settings`` (None: ``Settings.from_env()``), else
    ``DEFAULT_EXPORT_TIMEOUT_S``. A bad variable raises ``SettingsError`` naming it."""
    if timeout_s is not None:
        return _positive("timeout_s", timeout_s)
    s = settings if settings is not None else Settings.from_env()
    for configured in (s.otlp_metrics_timeout, s.otlp_timeout):
        if configured is not None:
            return _positive("timeout_s", configured)
    return DEFAULT_EXPORT_TIMEOUT_S


def otlp_reader(timeout_s: float | None = None, *, interval_s: float | None = None, endpoint: str | None = None,
                headers: Mapping[str, str] | None = None, **exporter_kwargs: Any) -> PeriodicExportingMetricReader:
    """The stock ``PeriodicExportingMetricReader`` with the stock ``OTLPMetricExporter`` (OTLP/HTTP, the
    ``otlp`` extra), whose export — retries included — gives up after ``timeout_s`` (see ``otlp_timeout_s``).
    ``endpoint``, ``headers`` and the other exporter arguments default to the standard
    OTEL_EXPORTER_OTLP_* variables, as the exporter reads them."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    timeout = otlp_timeout_s(timeout_s)
    exporter = OTLPMetricExporter(endpoint=endpoint, headers=headers, timeout=timeout, **exporter_kwargs)
    return periodic_reader(exporter, interval_s=interval_s, timeout_s=timeout)


def shutdown_provider(provider: MeterProvider, timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S) -> bool:
    """Shut ``provider`` down (every reader's final export included) and return within ``timeout_s``.

    True when it finished in time without errors. At the deadline it returns False and logs a warning: the
    rest goes on in a daemon thread (exports still under way give up after their own timeout), which never
    keeps the process from exiting. Errors of the provider's shutdown are logged, not raised."""
    timeout = _positive("timeout_s", timeout_s)
    errors: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:  # the SDK's own deadline a little earlier, so that readers which keep to it report success
            provider.shutdown(timeout_millis=timeout * 900)
        except Exception as exc:  # the SDK raises one Exception naming every reader that failed
            errors.append(exc)
        finally:
            done.set()

    started = time.monotonic()
    threading.Thread(target=run, name="telemetry-shutdown", daemon=True).start()
    if not done.wait(timeout):
        _log.warning("metrics shutdown did not finish within %.1f s; abandoning the exports still under way "
                     "(is the metrics receiver reachable?)", timeout)
        return False
    if errors:
        _log.error("metrics shutdown failed after %.1f s: %s", time.monotonic() - started, errors[0])
        return False
    return True


def shutdown_at_exit(provider: MeterProvider, timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S) -> Callable[[], None]:
    """Run ``shutdown_provider(provider, timeout_s)`` when the interpreter exits; returns the function that
    cancels it. Build the provider with ``shutdown_on_exit=False`` so the SDK's own exit handler (an
    unbounded ``provider.shutdown()``) is not registered as well."""

    def at_exit() -> None:
        shutdown_provider(provider, timeout_s)

    atexit.register(at_exit)
    return lambda: atexit.unregister(at_exit)
