"""Binary cache: hit/miss events and upload/download counts with their bytes."""

from __future__ import annotations

from telemetry.catalogue import (
    CACHE_DOWNLOADED_BYTES,
    CACHE_DOWNLOADS,
    CACHE_EVENT_TYPES,
    CACHE_EVENTS,
    CACHE_UPLOADED_BYTES,
    CACHE_UPLOADS,
)
from telemetry.cells import MAX_NUMBER, shown
from telemetry.registry import CounterChild, Registry


class Cache:
    """Record binary cache events, uploads and downloads."""

    def __init__(self, registry: Registry) -> None:
        events = registry.counter(CACHE_EVENTS)
        self._events: dict[str, CounterChild] = {t: events.labels(t) for t in sorted(CACHE_EVENT_TYPES)}
        self._uploads = registry.counter(CACHE_UPLOADS).labels()
        self._uploaded = registry.counter(CACHE_UPLOADED_BYTES).labels()
        self._downloads = registry.counter(CACHE_DOWNLOADS).labels()
        self._downloaded = registry.counter(CACHE_DOWNLOADED_BYTES).labels()

    def event(self, event_type: str) -> None:
        """``event_type``: local_hit, remote_hit or miss."""
        child = self._events.get(event_type)
        if child is None:
            raise ValueError(f"{CACHE_EVENTS}: event_type={event_type!r} is not one of "
                             f"{sorted(CACHE_EVENT_TYPES)}")
        child.inc()

    def uploaded(self, size_bytes: int) -> None:
        """One upload of ``size_bytes`` to the binary cache."""
        _check_bytes(CACHE_UPLOADED_BYTES, size_bytes)
        self._uploads.inc()
        self._uploaded.inc(size_bytes)

    def downloaded(self, size_bytes: int) -> None:
        """One download of ``size_bytes`` from the binary cache."""
        _check_bytes(CACHE_DOWNLOADED_BYTES, size_bytes)
        self._downloads.inc()
        self._downloaded.inc(size_bytes)


def _check_bytes(metric: str, size_bytes: int) -> None:
    """Checked before anything is recorded, so a bad call leaves every counter as it was."""
    if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or not 0 <= size_bytes <= MAX_NUMBER:
        raise ValueError(f"{metric}: byte counts must be whole numbers >= 0, got {shown(size_bytes)}")
