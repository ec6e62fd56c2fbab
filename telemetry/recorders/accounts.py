"""Projects and accounts gauges, fed by a callback the service registers.

The callback usually runs a database query, so its result is reused for ``refresh_seconds``; when it is
older than that, a scrape returns the cached value and a background thread refreshes it. A scrape never
waits on the query.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from telemetry.catalogue import ORGANIZATIONS, PROJECTS, USERS
from telemetry.registry import Registry

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AccountCounts:
    """What the callback returns."""

    projects: int
    organizations: int
    users: int


class _Cached:
    """Stale-while-revalidate around a slow callable."""

    def __init__(self, fetch: Callable[[], AccountCounts], refresh_seconds: float) -> None:
        self._fetch = fetch
        self._refresh = refresh_seconds
        self._value: AccountCounts | None = None
        self._at = -float("inf")
        self._lock = threading.Lock()
        self._running = False
        self.trigger()

    def trigger(self) -> None:
        with self._lock:
            if self._running or time.monotonic() - self._at < self._refresh:
                return
            self._running = True
        threading.Thread(target=self._run, name="telemetry-account-counts", daemon=True).start()

    def _run(self) -> None:
        try:
            value = self._fetch()
            if not isinstance(value, AccountCounts):
                raise TypeError(f"the account counts callback must return AccountCounts, got {value!r}")
            self._value, self._at = value, time.monotonic()
        except Exception:
            _log.exception("the account counts callback failed; keeping the previous values")
        finally:
            with self._lock:
                self._running = False

    def get(self) -> AccountCounts | None:
        self.trigger()
        return self._value


class Accounts:
    """Register where the projects/organizations/users totals come from."""

    def __init__(self, registry: Registry, refresh_seconds: float = 30.0) -> None:
        self._registry = registry
        self.refresh_seconds = refresh_seconds
        self._removers: list[Callable[[], None]] = []

    def register(self, fetch: Callable[[], AccountCounts], *, refresh_seconds: float | None = None) -> None:
        """Replace any earlier callback. The first fetch starts now, in the background."""
        self.unregister()
        cached = _Cached(fetch, refresh_seconds if refresh_seconds is not None else self.refresh_seconds)
        for name, field in ((PROJECTS, "projects"), (ORGANIZATIONS, "organizations"), (USERS, "users")):
            def read(field: str = field) -> list[tuple[tuple[()], float]]:
                value = cached.get()  # None until the first fetch finishes: no sample rather than a false 0
                return [] if value is None else [((), float(getattr(value, field)))]
            self._removers.append(self._registry.gauge(name).add_callback(read))

    def unregister(self) -> None:
        for remove in self._removers:
            remove()
        self._removers.clear()
