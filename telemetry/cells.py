"""Cells: where the numbers of one series live, and the handles recording writes through.

A cell is one series of one stream: a counter's sum, a gauge's last value, a histogram's bucket counts, sum,
count, min, max and exemplars. ``Family.labels(...)`` hands out the cell itself when a label set maps to one
cell (the common case: recording is a lock and an addition), or a ``Fanout`` when it maps to several (more
than one View stream on the instrument) or to an overflow series (which also counts each measurement in
``tuist_telemetry_overflow_measurements_total``). Values are checked here, before anything changes: ``number``
turns whatever the API accepts into an int or a float (ints and floats as they are, anything else with
``__float__`` converted), refuses bools, text and bytes with a ``TypeError`` and values outside the float range
with a ``ValueError``, each naming the metric.

Cells hold numbers and nothing about rendering; where they live is the store's business, so they can move to
shared memory without recorders or the renderer noticing.
"""

from __future__ import annotations

import sys
import threading
import time
from bisect import bisect_left
from collections.abc import Sequence

from telemetry import _sdk

_INF = float("inf")
# The largest finite float: ints above it could not be converted, summed or parsed by Prometheus.
MAX_NUMBER = sys.float_info.max
# Ints up to 2**53 are kept as ints (exact, and written as 3 rather than 3.0, as prometheus_client does); a
# bigger one becomes a float, so the fast paths below let only those through unconverted.
EXACT_MAX = float(2**53)
_ONE = 1  # the default increment, checked by identity on the hot path


def shown(value: object) -> str:
    """``repr(value)`` cut to 60 characters: error messages stay readable for a 400-digit int."""
    try:
        text = repr(value)
    except ValueError:  # an int past Python's str() digit limit
        return f"<int of about {int.bit_length(value) * 3 // 10} digits>"  # type: ignore[arg-type]
    return text if len(text) <= 60 else text[:57] + "..."


def number(metric: str, value: object) -> int | float:
    """``value`` as the number a cell holds: an int or float as it is, anything else with ``__float__``
    (Decimal, Fraction, numpy scalars, an IntEnum) as a float. ``TypeError`` for bools (True is not 1
    measurement), text, bytes and non-numbers; ``ValueError`` when it does not fit a float. Both name
    ``metric``. The range (>= 0, finite) is the caller's check."""
    cls = value.__class__
    if cls is float:
        return value  # type: ignore[return-value]
    if cls is int:
        if -EXACT_MAX <= value <= EXACT_MAX:  # type: ignore[operator]
            return value  # type: ignore[return-value]
        try:  # a bigger int: as a float, so that no sum of ints ever passes what Prometheus can parse
            return float(value)  # type: ignore[arg-type]
        except OverflowError:
            raise ValueError(f"{metric}: {shown(value)} is outside the float range") from None
    if isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", None) == "b":
        raise TypeError(f"{metric}: a bool is not a number, got {value!r}")
    if isinstance(value, str | bytes | bytearray) or not hasattr(value, "__float__"):
        raise TypeError(f"{metric}: expected a number, got {type(value).__name__} {shown(value)}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{metric}: {shown(value)} is outside the float range") from None
    except (TypeError, ValueError) as exc:  # a signalling NaN, a __float__ that fails
        raise ValueError(f"{metric}: {shown(value)} is not a usable number ({exc})") from None


def increment(metric: str, amount: object) -> int | float:
    """A counter increment, converted and checked: finite and >= 0."""
    amount = number(metric, amount)
    if not 0 <= amount <= MAX_NUMBER:  # also rejects NaN and ints past the float range
        raise ValueError(f"{metric}: increments must be finite and >= 0, got {shown(amount)}")
    return amount


def observation(metric: str, value: object) -> int | float:
    """A histogram observation, converted and checked: finite and >= 0 (every catalogue histogram measures
    a duration or a size)."""
    value = number(metric, value)
    if not 0 <= value <= MAX_NUMBER:
        raise ValueError(f"{metric}: observations must be finite and >= 0, got {shown(value)}")
    return value


def gauge_value(metric: str, value: object, what: str = "gauge values") -> int | float:
    """A gauge value or change, converted and checked: finite."""
    value = number(metric, value)
    if not -MAX_NUMBER <= value <= MAX_NUMBER:
        raise ValueError(f"{metric}: {what} must be finite numbers, got {shown(value)}")
    return value


class _Exemplars:
    """OpenTelemetry's exemplar filter for the cells, from OTEL_METRICS_EXEMPLAR_FILTER (set when a
    CatalogueMeterProvider is built): trace_based (the default) keeps measurements made under a sampled span,
    always_on every measurement, always_off none."""

    enabled = True  # trace_based or always_on
    always = False  # always_on

    def configure(self, name: str) -> None:
        name = name.strip().lower() or "trace_based"
        self.enabled = name != "always_off"
        self.always = name == "always_on"


EXEMPLARS = _Exemplars()


class _Scalar:
    """A cell holding one number."""

    __slots__ = ("_lock", "_metric", "labels", "value")
    overflow = False

    def __init__(self, metric: str, labels: tuple[str, ...]) -> None:
        self._metric = metric
        self.labels = labels
        self.value: int | float = 0
        self._lock = threading.Lock()


class CounterCell(_Scalar):
    """A monotonic cumulative sum."""

    __slots__ = ()

    def inc(self, amount: int | float = 1) -> None:
        """Add ``amount`` (finite, >= 0)."""
        if amount is not _ONE:  # inc(): nothing to check
            cls = amount.__class__
            if (cls is not int and cls is not float) or not 0 <= amount <= EXACT_MAX:  # also rejects NaN
                amount = increment(self._metric, amount)
        with self._lock:
            self.value += amount


class GaugeCell(_Scalar):
    """A last value. A gauge series is exposed once it was written (``written``): a gauge at 0 that nobody
    set would be a false reading, and a ``set(nan)`` that fails must leave no series behind."""

    __slots__ = ("written",)

    def __init__(self, metric: str, labels: tuple[str, ...]) -> None:
        super().__init__(metric, labels)
        self.written = False

    def set(self, value: int | float) -> None:
        cls = value.__class__
        if (cls is not int and cls is not float) or not -EXACT_MAX <= value <= EXACT_MAX:
            value = gauge_value(self._metric, value)
        self.value = value
        self.written = True

    def inc(self, amount: int | float = 1) -> None:
        cls = amount.__class__
        if (cls is not int and cls is not float) or not -EXACT_MAX <= amount <= EXACT_MAX:
            amount = gauge_value(self._metric, amount, "gauge changes")
        with self._lock:
            self.value += amount
            self.written = True

    def dec(self, amount: int | float = 1) -> None:
        self.inc(-amount)


class HistogramCell:
    """Explicit-bucket histogram: bucket ``i`` counts values in ``(b[i-1], b[i]]``, as OpenTelemetry's."""

    __slots__ = ("_bounds", "_lock", "_metric", "_pending", "count", "counts", "exemplars", "intervals", "labels",
                 "max", "min", "sum")
    overflow = False

    def __init__(self, metric: str, labels: tuple[str, ...], bounds: tuple[float, ...]) -> None:
        self._metric = metric
        self.labels = labels
        self._bounds = bounds
        self._pending: list[int | float] = []  # observe_measured values not yet bucketed
        self.counts = [0] * (len(bounds) + 1)
        self.sum: int | float = 0
        self.count = 0
        self.min: int | float = _INF
        self.max: int | float = -_INF
        # Per bucket, the last measurement recorded under a sampled span: (value, time, trace_id, span_id).
        self.exemplars: list[tuple[float, int, int | None, int | None] | None] | None = None
        # [min, max] since each delta reader's last collection (see ``interval``); None while there is none.
        self.intervals: list[list[float]] | None = None
        self._lock = threading.Lock()

    def observe(self, value: int | float) -> None:
        """Record ``value`` (finite, >= 0: every catalogue histogram measures a duration or a size)."""
        cls = value.__class__
        if (cls is not int and cls is not float) or not 0 <= value <= EXACT_MAX:
            value = observation(self._metric, value)
        i = bisect_left(self._bounds, value)
        with self._lock:
            self.counts[i] += 1
            self.sum += value
            self.count += 1
            if value < self.min:
                self.min = value
            if value > self.max:
                self.max = value
            if self.intervals:
                _widen(self.intervals, value, value)
        self._sample(i, value)

    def _sample(self, i: int, value: int | float) -> None:
        """Keep ``value`` as bucket ``i``'s exemplar when the exemplar filter takes it."""
        span = _sdk.current_span()
        if (span is not None and EXEMPLARS.enabled) or EXEMPLARS.always:
            self._exemplar(i, value, span)

    def _exemplar(self, i: int, value: int | float, span: object) -> None:
        trace_id = span_id = None
        if span is not None:
            ctx = span.get_span_context()  # type: ignore[attr-defined]
            if ctx.trace_flags.sampled:
                trace_id, span_id = ctx.trace_id, ctx.span_id
            elif not EXEMPLARS.always:
                return
        exemplars = self.exemplars
        if exemplars is None:
            exemplars = self.exemplars = [None] * len(self.counts)
        exemplars[i] = (value, time.time_ns(), trace_id, span_id)

    def interval(self, tracker: list[float] | None) -> tuple[list[float], int | float, int | float]:
        """For a delta reader: (its tracker, min, max) of what was recorded since its last call; the first call
        (``tracker`` None) covers everything so far and starts tracking."""
        if self._pending:
            self._drain()
        with self._lock:
            if tracker is None:
                tracker = [_INF, -_INF]
                self.intervals = [*(self.intervals or ()), tracker]
                return tracker, self.min, self.max
            low, high = tracker
            tracker[0], tracker[1] = _INF, -_INF
            return tracker, low, high

    def observe_measured(self, value: int | float) -> None:
        """Record a value the caller measured itself (a clock difference: finite, >= 0), unchecked and
        unbucketed: it is appended now and bucketed on the next read (``snapshot``) or after 512 such values.
        For instrumentation on paths where ``observe``'s lock and bisect are a visible share of the work
        (a SQLite ``SELECT 1`` takes ~30 µs). No exemplar is taken on this path."""
        pending = self._pending
        pending.append(value)  # list.append is atomic: no lock on this path
        if len(pending) >= 512:
            self._drain()

    def _drain(self) -> None:
        with self._lock:
            pending = self._pending
            n = len(pending)
            if not n:
                return
            values = pending[:n]
            del pending[:n]  # only what was taken: values appended meanwhile stay for the next drain
            bounds, counts, total = self._bounds, self.counts, self.sum
            for value in values:
                counts[bisect_left(bounds, value)] += 1
                total += value  # in order, as observe() adds: the same float sum to the last bit
            self.sum = total
            self.count += n
            low, high = min(values), max(values)
            self.min = min(self.min, low)
            self.max = max(self.max, high)
            if self.intervals:
                _widen(self.intervals, low, high)

    def snapshot(self) -> tuple[list[int], int | float, int]:
        """(bucket counts, sum, count), consistent with each other."""
        if self._pending:
            self._drain()
        with self._lock:
            return self.counts[:], self.sum, self.count


def _widen(intervals: list[list[float]], low: int | float, high: int | float) -> None:
    for tracker in intervals:
        if low < tracker[0]:
            tracker[0] = low
        if high > tracker[1]:
            tracker[1] = high


Cell = CounterCell | GaugeCell | HistogramCell


class Fanout:
    """A handle over several cells: one per View stream of the label set, and a count per measurement for
    each stream whose series overflowed. Same methods as the cells; values are checked once, up front."""

    __slots__ = ("_counter", "_direct", "_metric", "_one", "cells", "labels", "overflow", "reports")

    def __init__(self, metric: str, counter: bool, cells: Sequence[Cell], reports: Sequence[CounterCell],
                 labels: tuple[str, ...]) -> None:
        self._metric = metric
        self._counter = counter
        self.cells = tuple(cells)
        self.reports = tuple(reports)
        self.labels = labels
        self.overflow = bool(reports)
        # A one-stream family's overflow handle (one cell, one in-memory report): inc() and observe() count the
        # measurement in the report under its lock themselves, and inc() adds to an in-memory counter cell
        # itself too, without the cells' repeated checks and calls, so a label set past the limit costs about
        # what a cached one does.
        self._one: tuple[Cell, CounterCell] | None = None
        self._direct: tuple[CounterCell, CounterCell] | None = None
        if len(self.cells) == 1 and len(self.reports) == 1 and type(self.reports[0]) is CounterCell:
            cell, report = self._one = (self.cells[0], self.reports[0])
            if counter and type(cell) is CounterCell:
                self._direct = (cell, report)

    def _report(self) -> None:
        for report in self.reports:
            report.inc()

    def inc(self, amount: int | float = 1) -> None:
        if self._counter:
            if amount is not _ONE:
                amount = increment(self._metric, amount)
            direct = self._direct
            if direct is not None:
                target, report = direct
                lock = target._lock
                lock.acquire()  # acquire/release: a third of a with-statement's cost on CPython 3.11
                try:
                    target.value += amount
                finally:
                    lock.release()
                lock = report._lock
                lock.acquire()
                try:
                    report.value += 1
                finally:
                    lock.release()
                return
        else:
            amount = gauge_value(self._metric, amount, "gauge changes")
        for cell in self.cells:
            cell.inc(amount)  # type: ignore[union-attr]
        self._report()

    def dec(self, amount: int | float = 1) -> None:
        self.inc(-amount)

    def set(self, value: int | float) -> None:
        value = gauge_value(self._metric, value)
        for cell in self.cells:
            cell.set(value)  # type: ignore[union-attr]
        self._report()

    def observe(self, value: int | float) -> None:
        value = observation(self._metric, value)
        one = self._one
        if one is not None:
            cell, report = one
            cell.observe(value)  # type: ignore[union-attr]
            lock = report._lock
            lock.acquire()
            try:
                report.value += 1
            finally:
                lock.release()
            return
        for cell in self.cells:
            cell.observe(value)  # type: ignore[union-attr]
        self._report()

    def observe_measured(self, value: int | float) -> None:
        for cell in self.cells:
            cell.observe_measured(value)  # type: ignore[union-attr]
        self._report()

    # Reads go to the first stream's cell (the one tests and callers usually mean).
    @property
    def value(self) -> int | float:
        return self.cells[0].value if self.cells else 0  # type: ignore[union-attr]

    def snapshot(self) -> tuple[list[int], int | float, int]:
        return self.cells[0].snapshot()  # type: ignore[union-attr]

    @property
    def min(self) -> int | float:
        return self.cells[0].min  # type: ignore[union-attr]

    @property
    def max(self) -> int | float:
        return self.cells[0].max  # type: ignore[union-attr]
