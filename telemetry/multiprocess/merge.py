"""The merged view: every process file of a directory folded into streams the Prometheus renderer reads as it
reads the registry's own (``Renderer().streams(merged_streams(directory, registry), out, taken)``).

``MergedStream`` is a read-only ``telemetry.store.Stream``: one per stream of the registry, with the stream's
name, kind, help, label names, buckets and limit; ``collect()`` returns the merged series as (label values,
cell-like) pairs and the merged overflow series, where a counter's or gauge's cell-like has ``value`` (an int
when the float is whole, as the in-memory cells keep ints) and a histogram's has ``snapshot()``, ``min`` and
``max``. Merged objects persist per directory and registry stream, so the renderer's per-stream label-text
cache works across scrapes.

Each ``streams()`` call reads the directory under its shared lock (``directory``), and, when dead processes'
files (or leftovers of a crash) are there, first compacts them into the archive if no other reader holds
the directory (``compact``). Reading is cached: entries are parsed once per file; a merge reads the slots
in place from each file's mapping, histograms in bulk (``fold``), and builds the merged series with ``map``
and ``zip`` in C. A ``Merger`` is safe to call from several threads (its merges run one at a time).
"""

from __future__ import annotations

import os
import threading
import weakref
from itertools import repeat
from typing import Any

from telemetry.catalogue import Kind
from telemetry.multiprocess.compact import compact_snapshot
from telemetry.multiprocess.directory import FileData, Reader, Snapshot, exclusive, shared
from telemetry.multiprocess.fold import Folded, Shape, fold
from telemetry.multiprocess.modes import GaugeMode
from telemetry.registry import Registry
from telemetry.store import OVERFLOW_VALUES, Stream, StreamShape

_TWO_53 = float(2**53)
_INF = float("inf")


def _number(value: float) -> int | float:
    return int(value) if value.is_integer() and -_TWO_53 < value < _TWO_53 else value


class MergedValue(tuple[Any, ...]):
    """A merged counter or gauge series: the tuple (value, label values, overflow). Tuples, so a merge
    builds them with ``map`` in C."""

    __slots__ = ()
    exemplars = None

    @property
    def value(self) -> int | float:
        return self[0]  # type: ignore[no-any-return]

    @property
    def labels(self) -> tuple[str, ...]:
        return self[1]  # type: ignore[no-any-return]

    @property
    def overflow(self) -> bool:
        return self[2]  # type: ignore[no-any-return]


class MergedHistogram(tuple[Any, ...]):
    """A merged histogram series: the tuple (bucket counts, sum, count, min, max, label values, overflow); no
    exemplars (they stay in each process)."""

    __slots__ = ()
    exemplars = None

    def snapshot(self) -> tuple[list[int], int | float, int]:
        return self[0], self[1], self[2]

    @property
    def counts(self) -> list[int]:
        return self[0]  # type: ignore[no-any-return]

    @property
    def sum(self) -> int | float:
        return self[1]  # type: ignore[no-any-return]

    @property
    def count(self) -> int:  # type: ignore[override]  # the cells' attribute, over tuple.count
        return self[2]  # type: ignore[no-any-return]

    @property
    def min(self) -> float:
        low, high = self[3], self[4]
        return low if 0 <= low <= high < _INF else _INF

    @property
    def max(self) -> float:
        low, high = self[3], self[4]
        return high if 0 <= low <= high < _INF else -_INF

    @property
    def labels(self) -> tuple[str, ...]:
        return self[5]  # type: ignore[no-any-return]

    @property
    def overflow(self) -> bool:
        return self[6]  # type: ignore[no-any-return]


MergedCell = MergedValue | MergedHistogram


class MergedStream(Stream):
    """A registry stream's merged series across processes (read-only)."""

    __slots__ = ("_merged", "_merged_overflow", "source")

    def __init__(self, source: Stream) -> None:
        super().__init__(source.spec, StreamShape(source.name, source.help, source.label_names, source.buckets),
                         source.limit)
        self.source = source
        self.start_ns = source.start_ns
        self._merged: list[tuple[tuple[str, ...], Any]] = []
        self._merged_overflow: Any = None

    def _set(self, folded: Folded, mode: GaugeMode | None) -> None:
        series = folded.series
        keys = list(series)
        raw = folded.overflow
        overflow: Any = None
        cells: Any
        if self.kind is Kind.HISTOGRAM:
            if keys:
                counts, sums, lows, highs = zip(*series.values(), strict=True)
                cells = map(MergedHistogram, zip(counts, map(_number, sums), map(sum, counts), lows, highs, keys,
                                                 repeat(False), strict=False))  # repeat() never ends
            if raw is not None:
                overflow = MergedHistogram((raw[0], _number(raw[1]), sum(raw[0]), raw[2], raw[3], OVERFLOW_VALUES,
                                            True))
        else:
            if keys:
                values = (point[1] for point in series.values()) if mode is GaugeMode.LIVE_LATEST else series.values()
                cells = map(MergedValue, zip(map(_number, values), keys, repeat(False), strict=False))
            if raw is not None:
                overflow = MergedValue((_number(raw[1] if mode is GaugeMode.LIVE_LATEST else raw), OVERFLOW_VALUES,
                                        True))
        self._merged = list(zip(keys, cells, strict=True)) if keys else []
        self._merged_overflow = overflow

    def collect(self) -> tuple[list[tuple[tuple[str, ...], Any]], Any]:
        return self._merged, self._merged_overflow

    def cells(self) -> list[Any]:
        out = [cell for _, cell in self._merged]
        if self._merged_overflow is not None:
            out.append(self._merged_overflow)
        return out

    def get(self, labels: tuple[str, ...] | None) -> Any:
        if labels is None:
            return None
        if labels is OVERFLOW_VALUES:
            return self._merged_overflow
        for values, cell in self._merged:
            if values == labels:
                return cell
        return None

    def is_overflow(self, cell: object) -> bool:
        return cell is self._merged_overflow and cell is not None

    def __len__(self) -> int:
        return len(self._merged)

    def resolve(self, labels: tuple[str, ...]) -> tuple[Any, bool]:
        raise TypeError(f"{self.name}: a merged stream is read-only; record through the registry")

    def clear(self) -> None:
        self._merged, self._merged_overflow = [], None


class Merger:
    """The merged view of one directory, with what it caches between merges."""

    def __init__(self, directory: str | os.PathLike[str], *, compact: bool = True) -> None:
        self.directory = os.fspath(directory)
        self.compact = compact
        self._reader = Reader(self.directory)
        self._streams: dict[Stream, MergedStream] = {}
        self._lock = threading.Lock()

    def snapshot(self, registry: Registry) -> Snapshot:
        """Read the directory, compacting dead processes' files first when it can (release the snapshot
        when done with its values)."""
        with shared(self.directory) as locked:
            snap = self._reader.snapshot()
        if self.compact and locked and (any(not f.live for f in snap.files) or snap.stale or snap.temps
                                             or snap.unreadable):
            with exclusive(self.directory) as held:
                if held:
                    snap.release()
                    before = self._reader.snapshot()
                    try:
                        compact_snapshot(self.directory, before, registry)
                    finally:
                        before.release()
                    snap = self._reader.snapshot()
        return snap

    def streams(self, registry: Registry) -> list[MergedStream]:
        """Merge now: one ``MergedStream`` per registry stream, in the registry's order."""
        with self._lock:
            snap = self.snapshot(registry)
            try:
                sources: list[FileData] = ([snap.archive] if snap.archive is not None else []) + snap.files
                out = []
                cache: dict[Stream, MergedStream] = {}
                for stream in registry.streams():
                    merged = self._streams.get(stream)
                    if merged is None:
                        merged = MergedStream(stream)
                    merged.limit = stream.limit
                    cache[stream] = merged
                    shape = Shape(stream)
                    merged._set(fold(shape, sources), shape.mode)
                    out.append(merged)
                self._streams = cache
                return out
            finally:
                snap.release()

    def close(self) -> None:
        """Unmap the files kept between merges."""
        with self._lock:
            self._reader.close()


_mergers: weakref.WeakKeyDictionary[Registry, dict[str, Merger]] = weakref.WeakKeyDictionary()
_mergers_lock = threading.Lock()


def merged_streams(directory: str | os.PathLike[str], registry: Registry) -> list[MergedStream]:
    """The merged view of ``directory`` for ``registry``'s streams (one cached ``Merger`` per directory and
    registry)."""
    key = os.path.abspath(os.fspath(directory))
    with _mergers_lock:
        per_registry = _mergers.get(registry)
        if per_registry is None:
            per_registry = _mergers[registry] = {}
        merger = per_registry.get(key)
        if merger is None:
            merger = per_registry[key] = Merger(key)
    return merger.streams(registry)
