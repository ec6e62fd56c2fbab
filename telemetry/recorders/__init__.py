"""The typed recording API, one recorder per domain of the catalogue, bundled in ``Recorders``."""

from __future__ import annotations

from telemetry.recorders.accounts import AccountCounts, Accounts
from telemetry.recorders.auth import Auth
from telemetry.recorders.cache import Cache
from telemetry.recorders.previews import Previews
from telemetry.recorders.runs import Runs
from telemetry.recorders.storage import Operation, Storage
from telemetry.registry import Registry


class Recorders:
    """Every domain recorder bound to one registry: ``rec.runs.record(...)``, ``rec.cache.event(...)``."""

    def __init__(self, registry: Registry, *, gauge_refresh_seconds: float = 30.0) -> None:
        self.registry = registry
        self.runs = Runs(registry)
        self.cache = Cache(registry)
        self.previews = Previews(registry)
        self.storage = Storage(registry)
        self.auth = Auth(registry)
        self.accounts = Accounts(registry, gauge_refresh_seconds)


__all__ = ["AccountCounts", "Accounts", "Auth", "Cache", "Operation", "Previews", "Recorders", "Runs", "Storage"]
