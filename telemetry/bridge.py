"""The catalogue on OpenTelemetry: the package's meter creates an instrument per catalogue entry, and Views
whose aggregation is the store name them, so every reader on the MeterProvider sees the catalogue.

- ``CatalogueMeterProvider`` is the SDK's ``MeterProvider`` plus: the catalogue's instruments on its meter
  ``tuist.telemetry`` (``create_counter``, ``create_histogram``, ``create_observable_gauge``); one View per
  stream, whose ``StoreAggregation`` keeps the numbers in the registry's cells; meters that refuse, when the
  instrument is created, a catalogue name with another kind or a name that would be exposed under one.
- Recording through the registry's handles (``labels(...).inc()``) writes the cells directly, at a fraction of
  the SDK's ``add()`` cost. Recording through the OpenTelemetry API (the catalogue's own instrument, or any
  meter's instrument under a documented name) reaches the same cells through the View, validated the same way.
- Readers other than ours (OTLP, console, ``InMemoryMetricReader``) collect the cells through the SDK: each new
  series is announced to the SDK once (a zero measurement on the instrument) so that every reader's storage has
  an aggregation for it. With only our Prometheus reader nothing is announced: it renders the store itself.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    Counter,
    Histogram,
    Meter,
    MeterProvider,
    ObservableGauge,
    ObservableUpDownCounter,
    TraceBasedExemplarFilter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    MetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.metrics.view import DropAggregation, View

from telemetry import _sdk
from telemetry.catalogue import BY_INSTRUMENT, BY_NAME, SCOPE_NAME, Kind, sample_names
from telemetry.cells import EXEMPLARS
from telemetry.config import Settings, parse_exemplar_filter
from telemetry.registry import GaugeFamily, Registry, cap_label_value, label_text
from telemetry.store import OVERFLOW_VALUES, Stream
from telemetry.views import create_instrument

OVERFLOW_ATTRIBUTE = "otel.metric.overflow"
# The SDK's filter for each OTEL_METRICS_EXEMPLAR_FILTER value, handed to the SDK so it never reads the variable
# (nor refuses a value the settings accepted, such as ALWAYS_ON).
_SDK_EXEMPLAR_FILTERS: dict[str, type] = {"trace_based": TraceBasedExemplarFilter, "always_on": AlwaysOnExemplarFilter,
                                          "always_off": AlwaysOffExemplarFilter}
_CUMULATIVE = AggregationTemporality.CUMULATIVE

# Which OpenTelemetry instrument kinds may record a catalogue name (anything else is refused at creation).
ALIAS_METHODS: dict[Kind, tuple[str, ...]] = {
    Kind.COUNTER: ("create_counter",),
    Kind.HISTOGRAM: ("create_histogram",),
    Kind.GAUGE: ("create_gauge", "create_observable_gauge", "create_up_down_counter",
                 "create_observable_up_down_counter"),
}
_ALIAS_TYPES: dict[Kind, tuple[type, ...]] = {
    Kind.COUNTER: (Counter,),
    Kind.HISTOGRAM: (Histogram,),
    Kind.GAUGE: (_sdk.SyncGauge, ObservableGauge, UpDownCounter, ObservableUpDownCounter),
}


class _State(threading.local):
    quiet = False  # our Prometheus reader is collecting: it renders the store itself
    announcing = False  # a zero measurement announcing a new series to the SDK is under way
    last: object = None  # the measurement being fanned out to every reader's storage


_state = _State()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """While our reader collects: catalogue aggregations report nothing (their numbers are rendered from the
    store directly) and observable catalogue gauges only refresh their cells."""
    _state.quiet = True
    try:
        yield
    finally:
        _state.quiet = False


# --- the aggregation ---------------------------------------------------------------------------------------

class StoreAggregation(_sdk.Aggregation):
    """A View's aggregation whose numbers live in one store stream."""

    def __init__(self, stream: Stream, registry: Registry, *, owner: bool) -> None:
        self.stream = stream
        self.registry = registry
        self.owner = owner  # the catalogue's own instrument reports the stream; aliases only record into it

    def _create_aggregation(self, instrument: Any, attributes: Any, reservoir_factory: Any,
                            start_time_unix_nano: int) -> Any:
        kind = self.stream.kind
        cls: Any = (_Sum if kind is Kind.COUNTER else _Histogram if kind is Kind.HISTOGRAM else _Gauge)
        if not self.owner:
            cls = _ALIAS_CLASSES[cls]
        return cls(self, instrument, attributes)

    def __repr__(self) -> str:
        return f"StoreAggregation({self.stream.name!r})"


class _Point:
    """What the SDK keeps per stream and attribute set: a key into the store, read at collection."""

    def _init(self, agg: StoreAggregation, instrument: Any, attributes: Any) -> None:
        self._stream = agg.stream
        self._family = agg.registry[agg.stream.spec.name]
        self._report = agg.owner
        self._observed = agg.owner and isinstance(instrument, ObservableGauge)  # our gauges: cells are current
        self._add = isinstance(instrument, UpDownCounter)  # an up-down counter alias adds to a gauge
        self._key: tuple[str, ...] | None = None
        self._labelled: dict[str, Any] = {}  # the point's attributes: label values as /metrics shows them
        if attributes is not None:
            self._key, self._labelled = _key(self._stream, attributes, agg.registry.label_value_max_length)
        self._last_ns = self._stream.start_ns

    def aggregate(self, measurement: Any, should_sample_exemplar: bool = True) -> None:
        state = _state
        if state.announcing or self._observed or state.last is measurement:
            return
        # The SDK hands one measurement to every reader's storage and every View: record it once.
        state.last = measurement
        attributes = measurement.attributes or {}
        handle = self._family.labels(**attributes)
        value = measurement.value
        if self._stream.kind is Kind.HISTOGRAM:
            handle.observe(value)
        elif self._stream.kind is Kind.COUNTER or self._add:
            handle.inc(value)
        else:
            handle.set(value)

    def _cell(self) -> Any:
        if _state.quiet or not self._report:
            return None
        return self._stream.get(self._key)


def _key(stream: Stream, attributes: Any, max_length: int) -> tuple[tuple[str, ...] | None, dict[str, Any]]:
    if attributes.get(OVERFLOW_ATTRIBUTE) is True:
        return OVERFLOW_VALUES, {OVERFLOW_ATTRIBUTE: True}
    try:
        # Cut as the registry cuts them, so the key names the series the measurement went to.
        values = tuple(cap_label_value(label_text(stream.name, attributes[n]), max_length)
                       for n in stream.label_names)
    except KeyError:  # a projection of another stream's series: it names no series of this stream
        return None, {}
    except (TypeError, ValueError):  # not a label value at all: the measurement itself is refused in aggregate()
        return None, {}
    return values, dict(zip(stream.label_names, values, strict=True))


class _Sum(_Point, _sdk.SdkSum):
    def __init__(self, agg: StoreAggregation, instrument: Any, attributes: Any) -> None:
        self._init(agg, instrument, attributes)
        self._instrument_is_monotonic = True
        self._instrument_aggregation_temporality = AggregationTemporality.DELTA
        self._previous = 0

    def collect(self, temporality: AggregationTemporality, now: int) -> NumberDataPoint | None:  # type: ignore[override]
        cell = self._cell()
        if cell is None:
            return None
        value = cell.value
        if temporality is _CUMULATIVE:
            return NumberDataPoint(self._labelled, self._stream.start_ns, now, value)
        delta, self._previous = value - self._previous, value
        if not delta:  # nothing recorded in this interval: no point, as the SDK
            return None
        start, self._last_ns = self._last_ns, now
        return NumberDataPoint(self._labelled, start, now, delta)


class _Gauge(_Point, _sdk.SdkLastValue):
    def __init__(self, agg: StoreAggregation, instrument: Any, attributes: Any) -> None:
        self._init(agg, instrument, attributes)

    def collect(self, temporality: AggregationTemporality, now: int) -> NumberDataPoint | None:  # type: ignore[override]
        cell = self._cell()
        if cell is None:
            return None
        return NumberDataPoint(self._labelled, None, now, cell.value)  # type: ignore[arg-type]


class _Histogram(_Point, _sdk.SdkHistogram):
    def __init__(self, agg: StoreAggregation, instrument: Any, attributes: Any) -> None:
        self._init(agg, instrument, attributes)
        self._boundaries = agg.stream.buckets
        self._previous: tuple[list[int], float, int] | None = None
        self._tracker: list[float] | None = None
        self._exemplars_ns = 0

    def collect(self, temporality: AggregationTemporality, now: int) -> HistogramDataPoint | None:  # type: ignore[override]
        cell = self._cell()
        if cell is None:
            return None
        counts, total, count = cell.snapshot()
        if not count:  # the SDK exports no point for a histogram nothing was recorded to
            return None
        start, low, high = self._stream.start_ns, cell.min, cell.max
        if temporality is not _CUMULATIVE:
            previous = self._previous or ([0] * len(counts), 0, 0)
            if count == previous[2]:  # nothing recorded in this interval: no point, as the SDK
                return None
            self._previous = (counts, total, count)
            counts = [a - b for a, b in zip(counts, previous[0], strict=True)]
            total, count = total - previous[1], count - previous[2]
            self._tracker, low, high = cell.interval(self._tracker)
            start, self._last_ns = self._last_ns, now
        return HistogramDataPoint(self._labelled, start, now, count, total, tuple(counts), self._boundaries,
                                  low, high, self._new_exemplars(cell.exemplars))

    def _new_exemplars(self, held: Sequence[Any] | None) -> list[Any]:
        """The exemplars recorded since this reader last collected (trace and span id, value, time)."""
        if not held:
            return []
        from opentelemetry.sdk.metrics import Exemplar

        since = self._exemplars_ns
        out = [Exemplar({}, e[0], e[1], e[3], e[2]) for e in held if e is not None and e[1] > since]
        if out:
            self._exemplars_ns = max(e.time_unix_nano for e in out)
        return out


# Aliases record into the stream but never report it (the catalogue's instrument does): their own classes
# also keep the SDK from warning that the two Views produce one metric identity.
_ALIAS_CLASSES: dict[type, type] = {cls: type(f"Alias{cls.__name__}", (cls,), {}) for cls in (_Sum, _Gauge, _Histogram)}


# --- the provider ------------------------------------------------------------------------------------------

class CatalogueMeterProvider(MeterProvider):
    """The SDK's MeterProvider with the catalogue's instruments and Views on it.

    Build it with ``CatalogueMeterProvider.build(registry, readers, views, ...)``.
    """

    _bridge: Bridge

    @classmethod
    def build(cls, registry: Registry, readers: Sequence[MetricReader], views: Sequence[View] = (),
              user_views: Sequence[View] = (), *, exemplar_filter: str | None = None,
              **kwargs: Any) -> CatalogueMeterProvider:
        """``exemplar_filter``: trace_based, always_on or always_off (None: OTEL_METRICS_EXEMPLAR_FILTER, through
        ``Settings``), for the catalogue's cells and the SDK's own instruments alike."""
        bridge = Bridge(registry)
        name = parse_exemplar_filter(Settings.from_env().metrics_exemplar_filter if exemplar_filter is None
                                     else exemplar_filter)
        EXEMPLARS.configure(name)
        provider = cls(metric_readers=readers, views=[*bridge.views(), *(_sdk.excluding(v, bridge.reserved)
                                                                          for v in (*user_views, *views))],
                       exemplar_filter=_SDK_EXEMPLAR_FILTERS[name](), **kwargs)
        provider._bridge = bridge
        bridge.attach(provider, readers)
        return provider

    def instrument(self, name: str) -> Any:
        """The OpenTelemetry instrument of a catalogue entry, by documented or instrument name."""
        return self._bridge.instruments[(BY_NAME.get(name) or BY_INSTRUMENT[name]).name]

    def get_meter(self, name: str, *args: Any, **kwargs: Any) -> Meter:
        meter: Any = super().get_meter(name, *args, **kwargs)
        bridge = getattr(self, "_bridge", None)
        return _sdk.adopt(meter, bridge.meter_class) if bridge is not None else meter

    def add_metric_reader(self, metric_reader: MetricReader) -> None:
        super().add_metric_reader(metric_reader)
        self._bridge.reader_added(metric_reader)

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        bridge = getattr(self, "_bridge", None)
        if bridge is not None:
            bridge.detach()
        super().shutdown(timeout_millis=timeout_millis)


class Bridge:
    """Joins one registry to one provider: instruments, Views, new-series announcements, name checks."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.instruments: dict[str, Any] = {}
        self.meter: Meter = None  # type: ignore[assignment]
        self._announce = False
        self.meter_class = _sdk.make_checked(self._check)

    # Views: for every stream, one on the catalogue's instrument (which reports it) and, per instrument kind
    # allowed to record the documented name, one for other meters' instruments under that name.
    def views(self) -> list[View]:
        out: list[View] = []
        for family in self.registry.families():
            spec = family.spec
            if not family.streams:
                out.append(View(instrument_name=spec.instrument, meter_name=SCOPE_NAME,
                                aggregation=DropAggregation()))
                out.extend(View(instrument_name=spec.name, instrument_type=t, aggregation=DropAggregation())
                           for t in _ALIAS_TYPES[spec.kind])
            for stream in family.streams:
                keys = {*stream.label_names, OVERFLOW_ATTRIBUTE}
                out.append(View(instrument_name=spec.instrument, meter_name=SCOPE_NAME, name=stream.name,
                                description=stream.help, attribute_keys=keys,
                                aggregation=StoreAggregation(stream, self.registry, owner=True)))
                out.extend(View(instrument_name=spec.name, instrument_type=t, name=stream.name,
                                description=stream.help, attribute_keys=keys,
                                aggregation=StoreAggregation(stream, self.registry, owner=False))
                           for t in _ALIAS_TYPES[spec.kind])
        return out

    def reserved(self, instrument: Any) -> bool:
        """Instruments the catalogue shapes itself (users' Views were folded into its own)."""
        return instrument.name in BY_NAME or instrument.name in BY_INSTRUMENT

    def attach(self, provider: CatalogueMeterProvider, readers: Sequence[MetricReader]) -> None:
        from telemetry.exposition.reader import PrometheusReader

        self.meter = provider.get_meter(SCOPE_NAME)
        for family in self.registry.families():
            spec = family.spec
            if spec.kind is Kind.GAUGE:
                assert isinstance(family, GaugeFamily)
                self.instruments[spec.name] = create_instrument(self.meter, spec, callbacks=[_observe(family)])
            else:
                self.instruments[spec.name] = create_instrument(self.meter, spec)
        self.registry.on_new_series(self._new_series)
        self.registry.sdk_observes_gauges = True
        if any(not isinstance(r, PrometheusReader) for r in readers):
            self._announce_all()

    def detach(self) -> None:
        self._announce = False
        if self.registry.new_series_hook == self._new_series:  # not if a newer provider took the registry over
            self.registry.on_new_series(None)
            self.registry.sdk_observes_gauges = False

    def reader_added(self, reader: MetricReader) -> None:
        from telemetry.exposition.reader import PrometheusReader

        if not isinstance(reader, PrometheusReader) and not self._announce:
            self._announce_all()

    def _announce_all(self) -> None:
        self._announce = True
        for stream in self.registry.streams():
            points, overflow = stream.collect()
            for labels, _ in points:
                self._new_series(stream, labels)
            if overflow is not None:
                self._new_series(stream, OVERFLOW_VALUES)

    def _new_series(self, stream: Stream, labels: tuple[str, ...]) -> None:
        """Give every reader's storage an aggregation for a new series (gauges are observed instead)."""
        if not self._announce or stream.kind is Kind.GAUGE:
            return
        instrument = self.instruments.get(stream.spec.name)
        if instrument is None:
            return
        attributes = ({OVERFLOW_ATTRIBUTE: True} if labels is OVERFLOW_VALUES
                      else dict(zip(stream.label_names, labels, strict=True)))
        _state.announcing = True
        try:
            if stream.kind is Kind.COUNTER:
                instrument.add(0, attributes)
            else:
                instrument.record(0, attributes)
        finally:
            _state.announcing = False

    def _check(self, meter: Meter, method: str, name: str, unit: str) -> None:
        """Refuse an instrument that would put a second family under a catalogue name on /metrics."""
        from telemetry.exposition.render import otel_name

        lowered = name.lower()
        if lowered in BY_INSTRUMENT:
            if meter.name == SCOPE_NAME:
                return
            raise ValueError(f"{name} is the instrument telemetry's meter creates for {BY_INSTRUMENT[lowered].name}; "
                             f"record it under its documented name {BY_INSTRUMENT[lowered].name}, or through "
                             f"telemetry's own instrument")
        spec = BY_NAME.get(lowered)
        if spec is not None:
            if method not in ALIAS_METHODS[spec.kind]:
                raise ValueError(
                    f"{name}: the catalogue defines {spec.name} as a {spec.kind.value}; {method}() would expose "
                    f"it with another type; record it with {' or '.join(m + '()' for m in ALIAS_METHODS[spec.kind])}")
            return
        counter = method in ("create_counter", "create_observable_counter")
        histogram = method == "create_histogram"
        exposed = otel_name(lowered, unit, counter=counter, gauge=not counter and not histogram)
        taken = {n: s for s in self.registry.streams() for n in sample_names(s.name, s.kind)}
        own = sample_names(exposed, Kind.HISTOGRAM if histogram else Kind.COUNTER)
        clash = next((taken[n] for n in own if n in taken), None)
        if clash is not None:
            raise ValueError(f"{name}: it would be exposed on /metrics as {exposed}, which the catalogue's "
                             f"{clash.name} already uses; record {clash.spec.name} under that name instead")


def _observe(family: GaugeFamily) -> Any:
    """The callback of a catalogue gauge: refresh its cells, and report them to readers other than ours."""
    def callback(options: CallbackOptions) -> list[Observation]:
        family.observe_callbacks()
        if _state.quiet:
            return []
        out: list[Observation] = []
        for stream in family.streams:
            points, overflow = stream.collect()
            names = stream.label_names
            out.extend(Observation(cell.value, dict(zip(names, labels, strict=True))) for labels, cell in points)
            if overflow is not None:
                out.append(Observation(overflow.value, {OVERFLOW_ATTRIBUTE: True}))
        return out
    return callback


__all__ = ["CatalogueMeterProvider", "StoreAggregation", "quiet"]
