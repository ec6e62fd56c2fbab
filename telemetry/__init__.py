"""Tuist's documented telemetry for Python services, built on OpenTelemetry.

    import telemetry
    t = telemetry.setup()                # /metrics on :9091
    t.recorders.runs.record("build", is_ci=True, status=0, duration_ms=812.0)

Importing this package starts nothing; ``setup()`` does, once.
"""

from telemetry.catalogue import CATALOGUE, Kind, MetricSpec
from telemetry.config import Settings, SettingsError
from telemetry.exposition.server import ExpositionError
from telemetry.recorders import AccountCounts, Recorders
from telemetry.registry import Registry, default_registry
from telemetry.setup import Telemetry, current, setup, shutdown

__all__ = [
    "CATALOGUE",
    "AccountCounts",
    "ExpositionError",
    "Kind",
    "MetricSpec",
    "Recorders",
    "Registry",
    "Settings",
    "SettingsError",
    "Telemetry",
    "current",
    "default_registry",
    "setup",
    "shutdown",
]
