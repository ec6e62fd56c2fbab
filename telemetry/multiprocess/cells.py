"""Cells whose numbers live in a process file: telemetry.cells' CounterCell, GaugeCell and HistogramCell with
every write also stored in the cell's slots of the memory-mapped file.

Each class subclasses the in-memory cell, so the interface (``inc``/``set``/``dec``/``observe``/
``observe_measured``/``snapshot``/``value``/``min``/``max``/``labels``/``exemplars``/``overflow``) and the
``ValueError`` messages are the in-memory cell's: an invalid value is handed to the parent's method, which
raises its own error. The in-memory attributes stay the process's view (``snapshot()`` and ``value`` read
them); under the cell's lock every write stores the new numbers into the slots, each an aligned 8-byte store
through a memoryview cast to ``d`` (``_buf[i] = x``), which a reader in another process sees at once and
whole. Exemplars stay in process memory. ``observe_measured`` buckets at once (no pending list): a value that
waited in memory would be lost to a SIGKILL and invisible to the merge.

``_buf`` is swapped by the process file when it grows its mapping, after a fork (the child gets its own
file) and on close (a private buffer); ``_i`` is the index of the cell's first slot.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from typing import Any

from telemetry import cells as _cells
from telemetry.cells import EXACT_MAX, CounterCell, GaugeCell, HistogramCell, gauge_value, increment, observation

_INF = float("inf")
_ONE = 1  # the default increment, checked by identity on the hot path
_now = time.time


class SharedCounterCell(CounterCell):
    """A counter whose value is also slot ``_i`` of the file."""

    __slots__ = ("_buf", "_i")

    def __init__(self, metric: str, labels: tuple[str, ...], buf: Any, index: int) -> None:
        super().__init__(metric, labels)
        self._buf = buf
        self._i = index

    def inc(self, amount: int | float = 1) -> None:
        if amount is not _ONE:  # inc(): nothing to check
            cls = amount.__class__
            if (cls is not int and cls is not float) or not 0 <= amount <= EXACT_MAX:
                amount = increment(self._metric, amount)  # converts, or raises the in-memory cell's error
        with self._lock:
            value = self.value = self.value + amount
            self._buf[self._i] = value

    def reset(self) -> None:
        """Forget the numbers (a forked child starts its own file from zero)."""
        self._lock = threading.Lock()
        self.value = 0


class SharedGaugeCell(GaugeCell):
    """A gauge whose value is slot ``_i`` and the time of its last write slot ``_i + 1``."""

    __slots__ = ("_buf", "_i")

    def __init__(self, metric: str, labels: tuple[str, ...], buf: Any, index: int) -> None:
        super().__init__(metric, labels)
        self._buf = buf
        self._i = index

    def set(self, value: int | float) -> None:
        cls = value.__class__
        if (cls is not int and cls is not float) or not -EXACT_MAX <= value <= EXACT_MAX:
            value = gauge_value(self._metric, value)
        with self._lock:
            self.value = value
            self.written = True
            buf, i = self._buf, self._i
            buf[i] = value
            buf[i + 1] = _now()

    def inc(self, amount: int | float = 1) -> None:
        cls = amount.__class__
        if (cls is not int and cls is not float) or not -EXACT_MAX <= amount <= EXACT_MAX:
            amount = gauge_value(self._metric, amount, "gauge changes")
        with self._lock:
            value = self.value = self.value + amount
            self.written = True
            buf, i = self._buf, self._i
            buf[i] = value
            buf[i + 1] = _now()

    def reset(self) -> None:
        self._lock = threading.Lock()
        self.value = 0
        self.written = False


class SharedHistogramCell(HistogramCell):
    """A histogram whose bucket counts are slots ``_i..``, then sum (``_s``), count, min and max."""

    __slots__ = ("_buf", "_i", "_s")

    def __init__(self, metric: str, labels: tuple[str, ...], bounds: tuple[float, ...], buf: Any,
                 index: int) -> None:
        super().__init__(metric, labels, bounds)
        self._buf = buf
        self._i = index
        self._s = index + len(bounds) + 1

    def observe(self, value: int | float) -> None:
        cls = value.__class__
        if (cls is not int and cls is not float) or not 0 <= value <= EXACT_MAX:
            value = observation(self._metric, value)  # converts, or raises the in-memory cell's error
        self._sample(self._record(value), value)

    def observe_measured(self, value: int | float) -> None:
        """As ``observe`` without the exemplar: recorded (and checked) at once."""
        self._record(observation(self._metric, value))

    def _record(self, value: int | float) -> int:
        """Add ``value`` in memory and in the slots; returns its bucket."""
        i = bisect_left(self._bounds, value)
        with self._lock:
            buf, s = self._buf, self._s
            counts = self.counts
            buf[self._i + i] = counts[i] = counts[i] + 1
            buf[s] = self.sum = self.sum + value
            buf[s + 1] = self.count = self.count + 1
            if value < self.min:
                buf[s + 2] = self.min = value
            if value > self.max:
                buf[s + 3] = self.max = value
            if self.intervals:
                _cells._widen(self.intervals, value, value)
        return i

    def reset(self) -> None:
        self._lock = threading.Lock()
        self._pending = []
        self.counts = [0] * len(self.counts)
        self.sum = 0
        self.count = 0
        self.min = _INF
        self.max = -_INF
        self.exemplars = None


SharedCell = SharedCounterCell | SharedGaugeCell | SharedHistogramCell
