"""Previews: uploads and downloads."""

from __future__ import annotations

from telemetry.catalogue import PREVIEWS_DOWNLOADS, PREVIEWS_UPLOADS
from telemetry.registry import Registry


class Previews:
    """Record preview uploads and downloads."""

    def __init__(self, registry: Registry) -> None:
        self._uploads = registry.counter(PREVIEWS_UPLOADS).labels()
        self._downloads = registry.counter(PREVIEWS_DOWNLOADS).labels()

    def uploaded(self) -> None:
        self._uploads.inc()

    def downloaded(self) -> None:
        self._downloads.inc()
