"""The store: one ``Stream`` per catalogue instrument and View, its series and their cells.

A stream is what OpenTelemetry calls a metric stream: an instrument as one View shapes it (name, label keys,
buckets). Each keeps at most ``limit`` series, whose label values take at most ``limit * bytes_per_series``
bytes (UTF-8) together; a label set past either bound shares one overflow series (OpenTelemetry's
``otel.metric.overflow`` convention) and existing series keep their labels. The byte budget is what bounds a
scrape's size when label values are long (each is also cut to the registry's maximum length first).

``Stream.collect()`` hands out a neutral snapshot (label values and numbers, nothing rendered) that the
Prometheus renderer and the OpenTelemetry aggregations both read. Cells are made by a ``CellFactory``; the
in-process one is the default, and another (shared memory) can take its place without recorders or renderer
changing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from telemetry.catalogue import Kind, MetricSpec
from telemetry.cells import Cell, CounterCell, GaugeCell, HistogramCell
from telemetry.config import LABEL_BYTES_PER_SERIES

OVERFLOW_VALUES = ("true",)  # the label values of an overflow series: otel_metric_overflow="true"


def label_bytes(values: tuple[str, ...]) -> int:
    """What a series' label values weigh against its stream's byte budget: their UTF-8 length."""
    return sum(len(v) if v.isascii() else len(v.encode("utf-8", "surrogatepass")) for v in values)


@dataclass(frozen=True)
class StreamShape:
    """How a View shapes a catalogue instrument: the stream's name, help, label keys and buckets."""

    name: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()

    @classmethod
    def default(cls, spec: MetricSpec) -> StreamShape:
        return cls(spec.name, spec.help, spec.labels, spec.buckets)


class CellFactory(Protocol):
    def __call__(self, stream: Stream, labels: tuple[str, ...]) -> Cell: ...


def memory_cells(stream: Stream, labels: tuple[str, ...]) -> Cell:
    """Cells in this process's memory."""
    if stream.kind is Kind.COUNTER:
        return CounterCell(stream.spec.name, labels)
    if stream.kind is Kind.HISTOGRAM:
        return HistogramCell(stream.spec.name, labels, stream.buckets)
    return GaugeCell(stream.spec.name, labels)


class Stream:
    """One metric stream and its series."""

    __slots__ = ("_bytes", "_cells", "_lock", "_overflow", "_series", "buckets", "bytes_per_series", "help", "kind",
                 "label_names", "limit", "name", "positions", "spec", "start_ns")

    def __init__(self, spec: MetricSpec, shape: StreamShape, limit: int, cells: CellFactory = memory_cells,
                 bytes_per_series: int = LABEL_BYTES_PER_SERIES) -> None:
        if limit < 1:
            raise ValueError(f"{shape.name}: the label-set limit must be at least 1, got {limit}")
        self.spec = spec
        self.name = shape.name
        self.kind = spec.kind
        self.help = shape.help
        self.label_names = shape.labels
        # Where each of the stream's labels sits among the spec's (None when they are the same).
        self.positions = (None if shape.labels == spec.labels
                          else tuple(spec.labels.index(n) for n in shape.labels))
        self.buckets = shape.buckets
        self.limit = limit
        self.bytes_per_series = bytes_per_series
        self._bytes = 0  # label bytes of the series kept
        self.start_ns = time.time_ns()
        self._cells = cells
        self._series: dict[tuple[str, ...], Cell] = {}
        self._overflow: Cell | None = None
        self._lock = threading.Lock()

    def project(self, values: tuple[str, ...]) -> tuple[str, ...]:
        """The stream's label values from the spec's."""
        positions = self.positions
        return values if positions is None else tuple(values[i] for i in positions)

    @property
    def byte_budget(self) -> int:
        """The most bytes the label values of the stream's series take together."""
        return self.limit * self.bytes_per_series

    def resolve(self, labels: tuple[str, ...]) -> tuple[Any, bool]:
        """The cell for these label values, and whether it was just made. Past the limit or the byte budget:
        the overflow cell."""
        cell = self._series.get(labels)
        if cell is not None:
            return cell, False
        with self._lock:
            cell = self._series.get(labels)
            if cell is not None:
                return cell, False
            full = len(self._series) >= self.limit
            size = 0 if full else label_bytes(labels)
            if full or self._bytes + size > self.byte_budget:
                if self._overflow is None:
                    self._overflow = self._cells(self, OVERFLOW_VALUES)
                    return self._overflow, True
                return self._overflow, False
            cell = self._series[labels] = self._cells(self, labels)
            self._bytes += size
            return cell, True

    def is_overflow(self, cell: object) -> bool:
        return cell is self._overflow and cell is not None

    def get(self, labels: tuple[str, ...] | None) -> Any:
        """The existing cell for these label values (``OVERFLOW_VALUES`` names the overflow series)."""
        if labels is None:
            return None
        if labels is OVERFLOW_VALUES:
            return self._overflow
        return self._series.get(labels)

    def collect(self) -> tuple[list[tuple[tuple[str, ...], Any]], Any]:
        """The series as (label values in the stream's order, cell), in creation order, and the overflow cell
        if there is one: the neutral snapshot the renderer and the OpenTelemetry aggregations read. A gauge
        series nobody has written yet is left out (see ``GaugeCell``)."""
        with self._lock:
            items, overflow = list(self._series.items()), self._overflow
        if self.kind is Kind.GAUGE:
            items = [item for item in items if getattr(item[1], "written", True)]
            if overflow is not None and not getattr(overflow, "written", True):
                overflow = None
        return items, overflow

    def cells(self) -> list[Any]:
        """Every cell, overflow last."""
        with self._lock:
            out = list(self._series.values())
            if self._overflow is not None:
                out.append(self._overflow)
        return out

    def __len__(self) -> int:
        return len(self._series)

    def clear(self) -> None:
        with self._lock:
            self._series = {}
            self._overflow = None
            self._bytes = 0


NewSeries = Callable[[Stream, tuple[str, ...]], None]
