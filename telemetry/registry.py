"""The recording API over the store: one ``Family`` per catalogue entry, in a ``Registry``.

``family.labels(...)`` validates a label set once and returns its handle: the series' cell itself when the
label set maps to one cell (recording is then a lock and an addition, cheaper than prometheus_client's
``labels(...).inc()``), or a ``Fanout`` over the cells of several View streams or of an overflow series.
Handles are cached per spelling, overflowed ones too, so a label set past a family's limit costs about what a
cached one does.

The streams a family records into come from the Views (``configure``): by default one stream per catalogue
entry under its documented name, labels and buckets. ``telemetry.bridge`` connects the families to the
OpenTelemetry SDK, so every reader on the MeterProvider sees the same numbers.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from telemetry.catalogue import CATALOGUE, OVERFLOW_METRIC, Kind, MetricSpec, sample_names
from telemetry.cells import Cell, CounterCell, Fanout, GaugeCell, HistogramCell, shown
from telemetry.config import LABEL_BYTES_PER_SERIES, LABEL_VALUE_MAX_LENGTH, LABEL_VALUE_MIN_LENGTH
from telemetry.store import (
    OVERFLOW_VALUES,
    CellFactory,
    NewSeries,
    Stream,
    StreamShape,
    memory_cells,
)

_log = logging.getLogger(__name__)

LabelValue = str | int | bool | enum.Enum
# A gauge callback returns (labels, value) pairs; labels by name or by position (``()`` for none).
GaugeCallback = Callable[[], "Iterable[tuple[Mapping[str, LabelValue] | Sequence[LabelValue], float]]"]
# The handle types recording uses (what ``labels()`` returns).
CounterChild = CounterCell | Fanout
GaugeChild = GaugeCell | Fanout
HistogramChild = HistogramCell | Fanout


_HASH_SUFFIX = 17  # "~" and 16 hex digits


def label_text(metric: str, value: LabelValue, label: str = "") -> str:
    """A label value as /metrics shows it (bools as true/false, enums by value)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:  # past Python's int-to-str digit limit
            raise ValueError(f"{metric}: label {label or 'value'} is an int too long to write") from None
    where = f" ({label}={shown(value)})" if label else ""
    raise TypeError(f"{metric}: label values are str, int, bool or enum, got {type(value).__name__}{where}")


def cap_label_value(value: str, max_length: int) -> str:
    """``value`` when it has at most ``max_length`` characters; else its first ``max_length - 17`` characters,
    ``~`` and 16 hex digits of the BLAKE2b hash of the whole value: stable, so distinct long values stay
    distinct series, and at most ``max_length`` characters."""
    if len(value) <= max_length:
        return value
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return f"{value[:max_length - _HASH_SUFFIX]}~{digest}"


H = TypeVar("H")


class Family(Generic[H]):
    """One catalogue metric: its spec, label validation and the streams it records into."""

    def __init__(self, spec: MetricSpec, registry: Registry) -> None:
        self.spec = spec
        self.name = spec.name
        self._registry = registry
        self._streams: tuple[Stream, ...] = ()
        self._lock = threading.Lock()
        self._by_key: dict[tuple[Any, ...], Any] = {}  # every all-str spelling seen -> handle
        # Spellings holding non-str values, keyed with their types: True == 1 and hash(True) == hash(1), so
        # labels(True) ("true") and labels(1) ("1") must not share a cache slot.
        self._by_typed_key: dict[tuple[tuple[Any, ...], tuple[type, ...]], Any] = {}
        self._overflow_handle: Fanout | None = None
        self._callbacks: list[GaugeCallback] = []

    @property
    def streams(self) -> tuple[Stream, ...]:
        return self._streams

    @property
    def limit(self) -> int:
        """The label-set limit of the family's (first) stream."""
        return self._streams[0].limit if self._streams else self._registry.limit_for(self.name)

    # -- the recording side -------------------------------------------------------------------------------
    def labels(self, *values: LabelValue, **named: LabelValue) -> H:
        """The handle for this label set, created (and validated) on first use.

        Raises ``ValueError`` naming the metric and what is allowed for unknown or missing label names and
        values outside a documented set.
        """
        if named:
            if values:
                raise TypeError(f"{self.name}: pass label values by position or by name, not both")
            labels = self.spec.labels
            if len(named) != len(labels) or not all(n in named for n in labels):
                unknown = set(named) - set(labels)
                missing = set(labels) - set(named)
                raise ValueError(f"{self.name}: labels are {list(labels)}"
                                 + (f"; unknown {sorted(unknown)}" if unknown else "")
                                 + (f"; missing {sorted(missing)}" if missing else ""))
            values = tuple(named[n] for n in labels)
        try:
            handle = self._by_key.get(values)
            if handle is None:
                # Keys holding bools or ints are cached with their types (see _by_typed_key); looking them up
                # here keeps labels(name, True, 0) off the validating slow path.
                handle = self._by_typed_key.get((values, tuple(map(type, values))))
        except TypeError:  # an unhashable value: canonical() names the metric and the label
            handle = None
        if handle is None:
            handle = self._resolve(values)
        return handle  # type: ignore[no-any-return]

    def canonical(self, key: Sequence[Any]) -> tuple[str, ...]:
        """Validated label values as strings, in the spec's order (values past the registry's length limit
        cut by ``cap_label_value``)."""
        return self._canonical(key)[0]

    def _canonical(self, key: Sequence[Any]) -> tuple[tuple[str, ...], bool]:
        """``canonical(key)`` and whether a value was cut."""
        spec = self.spec
        if len(key) != len(spec.labels):
            raise ValueError(f"{self.name}: expected {len(spec.labels)} label values for {list(spec.labels)}, "
                             f"got {len(key)}")
        try:
            values = tuple(label_text(self.name, v) for v in key)
        except (TypeError, ValueError):  # again, naming the label (the rare path)
            for n, v in zip(spec.labels, key, strict=True):
                label_text(self.name, v, n)
            raise
        max_length = self._registry.label_value_max_length
        for name, value in zip(spec.labels, values, strict=True):
            allowed = spec.allowed.get(name)
            if allowed is not None and value not in allowed:
                raise ValueError(f"{self.name}: label {name}={shown(value)} is not one of {sorted(allowed)}")
            if not value:
                raise ValueError(f"{self.name}: label {name} must not be empty")
            if not value.isascii():
                try:
                    value.encode()
                except UnicodeEncodeError:  # a lone surrogate would fail every later scrape's encoding
                    raise ValueError(f"{self.name}: label {name}={shown(value)} is not valid Unicode "
                                     "text") from None
        if values and max(map(len, values)) > max_length:
            return tuple(cap_label_value(v, max_length) for v in values), True
        return values, False

    def _resolve(self, key: tuple[Any, ...]) -> Any:
        typed = None if all(type(v) is str for v in key) else (key, tuple(type(v) for v in key))
        values, cut = self._canonical(key)
        cells: list[Cell] = []
        reports: list[Any] = []
        for stream in self._streams:
            cell, new = stream.resolve(stream.project(values))
            overflowed = stream.is_overflow(cell)
            if overflowed:
                reports.append(self._registry.overflow_report(stream))
            cells.append(cell)
            if new:
                self._registry.new_series(stream, OVERFLOW_VALUES if overflowed else cell.labels)
        handle: Any
        if len(cells) == 1 and not reports:
            handle = cells[0]
        elif len(cells) == 1:  # every overflowing label set of a one-stream family shares one handle
            handle = self._overflow_handle
            if handle is None or handle.cells[0] is not cells[0]:
                handle = self._overflow_handle = Fanout(self.name, self.spec.kind is Kind.COUNTER, cells, reports,
                                                        OVERFLOW_VALUES)
        else:
            handle = Fanout(self.name, self.spec.kind is Kind.COUNTER, cells, reports,
                            cells[0].labels if cells else values)
        if cut:
            return handle  # a cut value is not cached: its full spelling could weigh megabytes
        with self._lock:
            if len(self._by_key) + len(self._by_typed_key) < 4 * max(self.limit, 1):  # spellings stay bounded
                if typed is None:
                    self._by_key[key] = handle
                else:
                    self._by_typed_key[typed] = handle
        return handle

    # -- configuration and the collection side ------------------------------------------------------------
    def _set_streams(self, streams: tuple[Stream, ...]) -> None:
        with self._lock:
            self._streams = streams
            self._by_key = {}
            self._by_typed_key = {}
            self._overflow_handle = None
        self._zero_series()

    def _zero_series(self) -> None:
        if not self.spec.labels and self.spec.kind is Kind.COUNTER:
            self._resolve(())  # a label-less counter exists from zero, as in prometheus_client

    def has_data(self) -> bool:
        """Whether anything beyond the zero series of a label-less counter exists."""
        for stream in self._streams:
            for cell in stream.cells():
                if cell.labels or getattr(cell, "value", None) or getattr(cell, "count", None):
                    return True
        return False

    def series(self) -> list[Any]:
        """The cells of the family's (first) stream, overflow last."""
        return self._streams[0].cells() if self._streams else []

    def clear(self) -> None:
        """Forget every series (tests, and series whose subject is gone)."""
        with self._lock:
            self._by_key = {}
            self._by_typed_key = {}
            self._overflow_handle = None
        for stream in self._streams:
            stream.clear()
        self._zero_series()


class CounterFamily(Family[CounterChild]):
    pass


class HistogramFamily(Family[HistogramChild]):
    pass


class GaugeFamily(Family[GaugeChild]):
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
                 limits: Mapping[str, int] | None = None, cells: CellFactory = memory_cells) -> None:
        specs = tuple(catalogue)
        self._families: dict[str, Family[Any]] = {s.name: _FAMILY_TYPES[s.kind](s, self) for s in specs}
        self._cells = cells
        self._default_limit = cardinality_limit
        self._limits: dict[str, int] = {}
        self._new_series: NewSeries | None = None
        # True while a CatalogueMeterProvider runs the gauge callbacks on every collection.
        self.sdk_observes_gauges = False
        self._check_limits(cardinality_limit, limits or {})
        self._default_limit, self._limits = cardinality_limit, dict(limits or {})
        # Longer label values are cut (``cap_label_value``); each stream's label values take at most
        # limit * label_bytes_per_series bytes. Set both with ``set_label_limits``.
        self.label_value_max_length = LABEL_VALUE_MAX_LENGTH
        self.label_bytes_per_series = LABEL_BYTES_PER_SERIES
        self._shapes: dict[str, tuple[StreamShape, ...]] = {}
        self.configure({})

    # -- configuration ------------------------------------------------------------------------------------
    def configure(self, shapes: Mapping[str, Sequence[StreamShape]], cells: CellFactory | None = None) -> None:
        """Set the streams each family records into (from the Views; families not named get their default
        stream) and, with ``cells``, where their cells live. A family whose streams change must not hold data
        yet: handles already given out would keep writing to the old streams."""
        unknown = set(shapes) - set(self._families)
        if unknown:
            raise ValueError(f"stream shapes for metrics not in the catalogue: {sorted(unknown)}")
        wanted = {name: tuple(shapes.get(name, (StreamShape.default(f.spec),)))
                  for name, f in self._families.items()}
        moved = cells is not None and cells != self._cells
        changed = [name for name, shape in wanted.items() if moved or self._shapes.get(name) != shape]
        busy = [name for name in changed if name in self._shapes and self._families[name].has_data()]
        if busy and moved:
            raise ValueError(f"metrics already recorded data in this process's memory: {sorted(busy)}; set up "
                             "multi-process mode before anything is recorded")
        if busy:
            raise ValueError(f"Views change metrics that already recorded data: {sorted(busy)}; pass views to the "
                             "first setup() of the process, before anything is recorded")
        if cells is not None:
            self._cells = cells
        # Every name on /metrics once: a histogram also writes X_bucket, X_sum and X_count.
        exposed: dict[str, StreamShape] = {}
        for spec_name, shapes_ in wanted.items():
            for shape in shapes_:
                for sample in sample_names(shape.name, self._families[spec_name].spec.kind):
                    other = exposed.setdefault(sample, shape)
                    if other is not shape:
                        what = f"be named [{shape.name!r}]" if other.name == shape.name else f"both expose {sample}"
                        raise ValueError(f"two metric streams would {what} ({other.name} and {shape.name}); give "
                                         f"each View its own name")
        for name in changed:
            family = self._families[name]
            family._set_streams(tuple(Stream(family.spec, shape, 1, self._cells, self.label_bytes_per_series)
                                      for shape in wanted[name]))
        self._shapes = wanted
        self.set_limits(self._default_limit, self._limits)

    def _check_limits(self, default: int, per_metric: Mapping[str, int]) -> None:
        known = set(self._families) | {s.name for f in self._families.values() for s in f.streams}
        unknown = set(per_metric) - known
        if unknown:
            raise ValueError(f"cardinality limits for metrics not in the catalogue: {sorted(unknown)}")
        for name, limit in {"default": default, **per_metric}.items():
            if limit < 1:
                raise ValueError(f"{name}: the label-set limit must be at least 1, got {limit}")

    def limit_for(self, name: str, spec_name: str | None = None) -> int:
        limit = self._limits.get(name, self._limits.get(spec_name or name, self._default_limit))
        if (spec_name or name) == OVERFLOW_METRIC:  # one series per stream at most: it must never overflow
            limit = max(limit, len(self.streams()))
        return limit

    def set_limits(self, default: int, per_metric: Mapping[str, int]) -> None:
        """Label sets kept per stream before new ones overflow; existing series are never dropped."""
        self._check_limits(default, per_metric)
        self._default_limit, self._limits = default, dict(per_metric)
        for family in self._families.values():
            for stream in family.streams:
                stream.limit = self.limit_for(stream.name, family.name)

    def set_label_limits(self, max_length: int = LABEL_VALUE_MAX_LENGTH,
                         bytes_per_series: int = LABEL_BYTES_PER_SERIES) -> None:
        """Label values longer than ``max_length`` characters are cut (``cap_label_value``), and each stream's
        series may take ``bytes_per_series`` times its label-set limit in label bytes before new label sets
        overflow. Applies to label sets resolved from now on; existing series are never dropped."""
        if max_length < LABEL_VALUE_MIN_LENGTH:
            raise ValueError(f"the label value length limit must be at least {LABEL_VALUE_MIN_LENGTH}, got "
                             f"{max_length}")
        if bytes_per_series < 1:
            raise ValueError(f"the label bytes per series must be at least 1, got {bytes_per_series}")
        self.label_value_max_length = max_length
        self.label_bytes_per_series = bytes_per_series
        for family in self._families.values():
            for stream in family.streams:
                stream.bytes_per_series = bytes_per_series

    # -- the SDK bridge's hooks ---------------------------------------------------------------------------
    def on_new_series(self, hook: NewSeries | None) -> None:
        """Call ``hook(stream, label values)`` for every series made from now on (``None`` to stop)."""
        self._new_series = hook

    @property
    def new_series_hook(self) -> NewSeries | None:
        return self._new_series

    def new_series(self, stream: Stream, labels: tuple[str, ...]) -> None:
        hook = self._new_series
        if hook is not None:
            hook(stream, labels)

    def overflow_report(self, stream: Stream) -> Any:
        """The counter a measurement into ``stream``'s overflow series also increments."""
        family = self._families.get(OVERFLOW_METRIC)
        if family is None or family.spec.labels != ("metric",):
            return CounterCell(OVERFLOW_METRIC, ())  # no overflow metric in this catalogue: count nowhere
        return family.labels(stream.name)

    # -- access -------------------------------------------------------------------------------------------
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

    def streams(self) -> list[Stream]:
        """Every stream, in catalogue order."""
        return [s for f in self._families.values() for s in f.streams]

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
