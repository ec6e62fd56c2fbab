"""The in-process store behind every catalogue metric.

A ``Registry`` holds one family per catalogue entry. ``family.labels(...)`` validates a label set once and
returns a bound child; recording on a child is a lock and an addition, so the hot path costs less than
prometheus_client's ``labels(...).inc()`` while keeping OpenTelemetry's semantics: cumulative monotonic sums,
last-value gauges, explicit-bucket histograms whose bucket ``i`` counts values in ``(b[i-1], b[i]]``.
``telemetry.otel`` turns a registry into OpenTelemetry ``MetricsData``; the exposition renders it directly.

Each family keeps at most ``limit`` label sets. Later label sets share one overflow series labelled
``otel_metric_overflow="true"`` and every measurement there is counted in
``tuist_telemetry_overflow_measurements_total{metric}``; existing series keep their exact labels.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from telemetry.catalogue import CATALOGUE, OVERFLOW_LABEL, OVERFLOW_METRIC, Kind, MetricSpec

_log = logging.getLogger(__name__)
_INF = math.inf

LabelValue = str | int | bool | enum.Enum
# A gauge callback returns (labels, value) pairs; labels by name or by position (``()`` for none).
GaugeCallback = Callable[[], "Iterable[tuple[Mapping[str, LabelValue] | Sequence[LabelValue], float]]"]


def escape_label_value(value: str) -> str:
    """Text format 0.0.4 escaping for label values: backslash, double quote and newline."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def label_inner(names: Sequence[str], values: Sequence[str]) -> str:
    """``a="x",b="y",`` — the rendered label pairs with a trailing comma (empty for no labels)."""
    return "".join(f'{n}="{escape_label_value(v)}",' for n, v in zip(names, values, strict=True))


def _to_label(value: LabelValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"label values are str, int, bool or enum, got {type(value).__name__}")


class _Child:
    """A series: one label set of one family."""

    __slots__ = ("_lock", "inner", "labels")
    overflow = False  # True for the one series a family's overflowing label sets share

    def __init__(self, labels: tuple[str, ...], inner: str) -> None:
        self.labels = labels
        self.inner = inner
        self._lock = threading.Lock()

    @property
    def labelstr(self) -> str:
        return "{" + self.inner[:-1] + "}" if self.inner else ""


class CounterChild(_Child):
    """A monotonic cumulative sum."""

    __slots__ = ("_metric", "value")

    def __init__(self, labels: tuple[str, ...], inner: str, metric: str) -> None:
        super().__init__(labels, inner)
        self._metric = metric
        self.value: int | float = 0

    def inc(self, amount: int | float = 1) -> None:
        """Add ``amount`` (finite, >= 0)."""
        if not 0 <= amount < _INF:  # also rejects NaN
            raise ValueError(f"{self._metric}: increments must be finite and >= 0, got {amount!r}")
        with self._lock:
            self.value += amount


class GaugeChild(_Child):
    """A last value."""

    __slots__ = ("_metric", "value")

    def __init__(self, labels: tuple[str, ...], inner: str, metric: str) -> None:
        super().__init__(labels, inner)
        self._metric = metric
        self.value: int | float = 0

    def set(self, value: int | float) -> None:
        if not -_INF < value < _INF:
            raise ValueError(f"{self._metric}: gauge values must be finite numbers, got {value!r}")
        self.value = value

    def inc(self, amount: int | float = 1) -> None:
        if not -_INF < amount < _INF:
            raise ValueError(f"{self._metric}: gauge changes must be finite numbers, got {amount!r}")
        with self._lock:
            self.value += amount

    def dec(self, amount: int | float = 1) -> None:
        self.inc(-amount)


class HistogramChild(_Child):
    """Explicit-bucket histogram: per-bucket counts, sum and count."""

    __slots__ = ("_bounds", "_metric", "_pending", "count", "counts", "max", "min", "sum")

    def __init__(self, labels: tuple[str, ...], inner: str, metric: str, bounds: tuple[float, ...]) -> None:
        super().__init__(labels, inner)
        self._metric = metric
        self._bounds = bounds
        self._pending: list[int | float] = []  # observe_measured values not yet bucketed
        self.counts = [0] * (len(bounds) + 1)
        self.sum: int | float = 0
        self.count = 0
        self.min: int | float = _INF  # min and max as OpenTelemetry's histogram aggregation keeps them
        self.max: int | float = -_INF

    def observe(self, value: int | float) -> None:
        """Record ``value`` (finite, >= 0: every catalogue histogram measures a duration or a size)."""
        if not 0 <= value < _INF:
            raise ValueError(f"{self._metric}: observations must be finite and >= 0, got {value!r}")
        i = bisect_left(self._bounds, value)
        with self._lock:
            self.counts[i] += 1
            self.sum += value
            self.count += 1
            if value < self.min:
                self.min = value
            if value > self.max:
                self.max = value

    def observe_measured(self, value: int | float) -> None:
        """Record a value the caller measured itself (a clock difference: finite, >= 0), unchecked and
        unbucketed: it is appended now and bucketed on the next read (``snapshot``) or after 512 such values.
        For instrumentation on paths where ``observe``'s lock and bisect are a visible share of the work
        (a SQLite ``SELECT 1`` takes ~30 µs)."""
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
            self.min = min(self.min, min(values))
            self.max = max(self.max, max(values))

    def snapshot(self) -> tuple[list[int], int | float, int]:
        if self._pending:
            self._drain()
        with self._lock:
            return self.counts[:], self.sum, self.count


class _OverflowCounter(CounterChild):
    __slots__ = ("_report",)
    overflow = True

    def __init__(self, labels: tuple[str, ...], inner: str, metric: str, report: CounterChild) -> None:
        super().__init__(labels, inner, metric)
        self._report = report

    def inc(self, amount: int | float = 1) -> None:
        super().inc(amount)
        self._report.inc()


class _OverflowGauge(GaugeChild):
    __slots__ = ("_report",)
    overflow = True

    def __init__(self, labels: tuple[str, ...], inner: str, metric: str, report: CounterChild) -> None:
        super().__init__(labels, inner, metric)
        self._report = report

    def set(self, value: int | float) -> None:
        super().set(value)
        self._report.inc()

    def inc(self, amount: int | float = 1) -> None:
        super().inc(amount)
        self._report.inc()


class _OverflowHistogram(HistogramChild):
    __slots__ = ("_report",)
    overflow = True

    def __init__(self, labels: tuple[str, ...], inner: str, metric: str, bounds: tuple[float, ...],
                 report: CounterChild) -> None:
        super().__init__(labels, inner, metric, bounds)
        self._report = report

    def observe(self, value: int | float) -> None:
        super().observe(value)
        self._report.inc()

    def observe_measured(self, value: int | float) -> None:
        super().observe_measured(value)
        self._report.inc()


C = TypeVar("C", bound=_Child)


class Family(Generic[C]):
    """One metric family: its spec and its series, keyed by label values."""

    def __init__(self, spec: MetricSpec, limit: int, overflow_report: Callable[[], CounterChild] | None) -> None:
        if limit < 1:
            raise ValueError(f"{spec.name}: the label-set limit must be at least 1, got {limit}")
        self.spec = spec
        self.name = spec.name
        self.limit = limit
        self._overflow_report = overflow_report
        self._lock = threading.Lock()
        self._by_key: dict[tuple[Any, ...], C] = {}  # every all-str spelling seen -> series
        # Spellings holding non-str values, keyed with their types: True == 1 and hash(True) == hash(1), so
        # labels(True) ("true") and labels(1) ("1") must not share a cache slot.
        self._by_typed_key: dict[tuple[tuple[Any, ...], tuple[type, ...]], C] = {}
        self._series: dict[tuple[str, ...], C] = {}  # canonical label values -> series
        self._overflow: C | None = None
        self._callbacks: list[GaugeCallback] = []
        if not spec.labels and spec.kind is Kind.COUNTER:
            self._resolve(())  # a label-less counter exists from zero, as in prometheus_client

    # -- the recording side -------------------------------------------------------------------------------
    def labels(self, *values: LabelValue, **named: LabelValue) -> C:
        """The series for this label set, created (and validated) on first use.

        Raises ``ValueError`` naming the metric and what is allowed for unknown or missing label names and
        values outside a documented set.
        """
        if named:
            if values:
                raise TypeError(f"{self.name}: pass label values by position or by name, not both")
            unknown = set(named) - set(self.spec.labels)
            if unknown or len(named) != len(self.spec.labels):
                missing = set(self.spec.labels) - set(named)
                raise ValueError(f"{self.name}: labels are {list(self.spec.labels)}"
                                 + (f"; unknown {sorted(unknown)}" if unknown else "")
                                 + (f"; missing {sorted(missing)}" if missing else ""))
            values = tuple(named[n] for n in self.spec.labels)
        child = self._by_key.get(values)
        if child is None:
            # Keys holding bools or ints are cached with their types (see _by_typed_key); looking them up here
            # keeps labels(name, True, 0) off the validating slow path.
            child = self._by_typed_key.get((values, tuple(map(type, values))))
            if child is None:
                child = self._resolve(values)
        return child

    def _resolve(self, key: tuple[Any, ...]) -> C:
        spec = self.spec
        typed = None if all(type(v) is str for v in key) else (key, tuple(type(v) for v in key))
        if typed is not None:
            cached = self._by_typed_key.get(typed)
            if cached is not None:
                return cached
        if len(key) != len(spec.labels):
            raise ValueError(f"{self.name}: expected {len(spec.labels)} label values for {list(spec.labels)}, "
                             f"got {len(key)}")
        values = tuple(_to_label(v) for v in key)
        for name, value in zip(spec.labels, values, strict=True):
            allowed = spec.allowed.get(name)
            if allowed is not None and value not in allowed:
                raise ValueError(f"{self.name}: label {name}={value!r} is not one of {sorted(allowed)}")
            if not value:
                raise ValueError(f"{self.name}: label {name} must not be empty")
            if not value.isascii():
                try:
                    value.encode()
                except UnicodeEncodeError:  # a lone surrogate would fail every later scrape's encoding
                    raise ValueError(f"{self.name}: label {name}={value!r} is not valid Unicode text") from None
        with self._lock:
            child = self._series.get(values)
            if child is None:
                if len(self._series) >= self.limit:
                    return self._overflow_child()
                child = self._new(values, label_inner(spec.labels, values))
                self._series[values] = child
            if len(self._by_key) + len(self._by_typed_key) < 4 * self.limit:  # spellings stay bounded too
                if typed is None:
                    self._by_key[key] = child
                else:
                    self._by_typed_key[typed] = child
            return child

    def _overflow_child(self) -> C:
        if self._overflow is None:
            report = self._overflow_report() if self._overflow_report else None
            self._overflow = self._new(("true",), label_inner((OVERFLOW_LABEL,), ("true",)), report)
            _log.warning("%s reached its limit of %d label sets; new label sets go to the %s=\"true\" series",
                         self.name, self.limit, OVERFLOW_LABEL)
        return self._overflow

    def _new(self, values: tuple[str, ...], inner: str, report: CounterChild | None = None) -> C:
        raise NotImplementedError

    # -- the collection side ------------------------------------------------------------------------------
    def series(self) -> list[C]:
        """A snapshot of the series, overflow last."""
        with self._lock:
            out = list(self._series.values())
            if self._overflow is not None:
                out.append(self._overflow)
        return out

    def clear(self) -> None:
        """Forget every series (tests, and series whose subject is gone)."""
        with self._lock:
            self._by_key.clear()
            self._by_typed_key.clear()
            self._series.clear()
            self._overflow = None
        if not self.spec.labels and self.spec.kind is Kind.COUNTER:
            self._resolve(())


class CounterFamily(Family[CounterChild]):
    def _new(self, values: tuple[str, ...], inner: str, report: CounterChild | None = None) -> CounterChild:
        if report is not None:
            return _OverflowCounter(values, inner, self.name, report)
        return CounterChild(values, inner, self.name)


class HistogramFamily(Family[HistogramChild]):
    def _new(self, values: tuple[str, ...], inner: str, report: CounterChild | None = None) -> HistogramChild:
        if report is not None:
            return _OverflowHistogram(values, inner, self.name, self.spec.buckets, report)
        return HistogramChild(values, inner, self.name, self.spec.buckets)


class GaugeFamily(Family[GaugeChild]):
    def _new(self, values: tuple[str, ...], inner: str, report: CounterChild | None = None) -> GaugeChild:
        if report is not None:
            return _OverflowGauge(values, inner, self.name, report)
        return GaugeChild(values, inner, self.name)

    def add_callback(self, callback: GaugeCallback) -> Callable[[], None]:
        """Read values at collection time: ``callback()`` returns (labels, value) pairs. Returns a function
        that removes the callback."""
        with self._lock:
            self._callbacks.append(callback)

        def remove() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)
        return remove

    def observe_callbacks(self) -> None:
        """Run the callbacks and store what they report; a failing callback is logged and skipped."""
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                for labels, value in callback():
                    child = self.labels(**labels) if isinstance(labels, Mapping) else self.labels(*labels)
                    child.set(value)
            except Exception:
                _log.exception("gauge callback for %s failed", self.name)


_FAMILY_TYPES: Mapping[Kind, type[Family[Any]]] = {
    Kind.COUNTER: CounterFamily,
    Kind.GAUGE: GaugeFamily,
    Kind.HISTOGRAM: HistogramFamily,
}


class Registry:
    """One family per catalogue entry; ``registry["tuist_runs_total"]`` or the typed accessors."""

    def __init__(self, catalogue: Iterable[MetricSpec] = CATALOGUE, *, cardinality_limit: int = 2000,
                 limits: Mapping[str, int] | None = None) -> None:
        self._families: dict[str, Family[Any]] = {}
        for s in catalogue:
            report = None if s.name == OVERFLOW_METRIC else self._reporter(s.name)
            self._families[s.name] = _FAMILY_TYPES[s.kind](s, cardinality_limit, report)
        self.set_limits(cardinality_limit, limits or {})

    def set_limits(self, default: int, per_metric: Mapping[str, int]) -> None:
        """Label sets kept per family before new ones overflow; existing series are never dropped."""
        unknown = set(per_metric) - set(self._families)
        if unknown:
            raise ValueError(f"cardinality limits for metrics not in the catalogue: {sorted(unknown)}")
        for name, family in self._families.items():
            limit = per_metric.get(name, default)
            if limit < 1:
                raise ValueError(f"{name}: the label-set limit must be at least 1, got {limit}")
            if name == OVERFLOW_METRIC:  # one series per family at most: it must never overflow itself
                limit = max(limit, len(self._families))
            family.limit = limit

    def _reporter(self, name: str) -> Callable[[], CounterChild] | None:
        def report() -> CounterChild:
            family = self._families.get(OVERFLOW_METRIC)
            return family.labels(name) if isinstance(family, CounterFamily) else CounterChild((), "", name)
        return report

    def __getitem__(self, name: str) -> Family[Any]:
        try:
            return self._families[name]
        except KeyError:
            raise KeyError(f"{name!r} is not a metric of this registry") from None

    def __contains__(self, name: object) -> bool:
        return name in self._families

    def counter(self, name: str) -> CounterFamily:
        family = self[name]
        if not isinstance(family, CounterFamily):
            raise TypeError(f"{name} is a {family.spec.kind.value}, not a counter")
        return family

    def histogram(self, name: str) -> HistogramFamily:
        family = self[name]
        if not isinstance(family, HistogramFamily):
            raise TypeError(f"{name} is a {family.spec.kind.value}, not a histogram")
        return family

    def gauge(self, name: str) -> GaugeFamily:
        family = self[name]
        if not isinstance(family, GaugeFamily):
            raise TypeError(f"{name} is a {family.spec.kind.value}, not a gauge")
        return family

    def families(self) -> tuple[Family[Any], ...]:
        return tuple(self._families.values())

    def observe_gauges(self) -> None:
        """Run every gauge callback (called once per collection)."""
        for family in self._families.values():
            if isinstance(family, GaugeFamily):
                family.observe_callbacks()

    def clear(self) -> None:
        for family in self._families.values():
            family.clear()


_default: Registry | None = None
_default_lock = threading.Lock()


def default_registry() -> Registry:
    """The process-wide registry the recorders and ``setup()`` use unless given another one."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Registry()
    return _default
