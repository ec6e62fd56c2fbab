"""Previews: uploads and downloads."""

from __future__ import annotations

from telemetry.registry import Registry


class Previews:
    """Record preview uploads and downloads."""

    def __init__(self, registry: Registry) -> None:
        self._uploads = registry.counter("tuist_previews_uploads_total").labels()
        self._downloads = registry.counter("tuist_previews_downloads_total").labels()

    def uploaded(self) -> None:
        self._uploads.inc()

    def downloaded(self) -> None:
        self._downloads.inc()
