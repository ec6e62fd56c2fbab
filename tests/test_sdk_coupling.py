"""The OpenTelemetry SDK behaviour ``telemetry/_sdk.py`` relies on, checked against the SDK installed.

``telemetry/_sdk.py`` holds every private SDK name the package uses (the aggregation classes whose type decides
a stream's data type, View settings, the current-span context key, a reader's collect callback, the Meter's
``create_*`` signatures). An SDK release that changes one of them would not break an import: it would quietly
change what readers and ``/metrics`` show. Each test here states one behaviour the bridge depends on and fails
with a message naming it.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    Meter,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    SimpleFixedSizeExemplarReservoir,
    UpDownCounter,
)
from opentelemetry.sdk.metrics import _Gauge as SyncGauge
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.metrics.view import (
    DefaultAggregation,
    DropAggregation,
    ExplicitBucketHistogramAggregation,
    LastValueAggregation,
    SumAggregation,
    View,
)
from opentelemetry.sdk.trace import TracerProvider

from telemetry import _sdk
from telemetry.exposition.reader import PrometheusReader

# --- helpers -----------------------------------------------------------------------------------------------


@pytest.fixture
def make_provider() -> Iterator[Callable[..., MeterProvider]]:
    """MeterProviders that are shut down after the test (never global, no atexit hook)."""
    made: list[MeterProvider] = []

    def make(*readers: Any, views: tuple[View, ...] | list[View] = ()) -> MeterProvider:
        provider = MeterProvider(metric_readers=list(readers), views=list(views), shutdown_on_exit=False)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.shutdown()


def metrics_of(reader: InMemoryMetricReader) -> dict[str, Metric]:
    data = reader.get_metrics_data()
    if data is None:
        return {}
    return {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


class Pick(_sdk.Aggregation):
    """A View aggregation that hands the SDK an instance of ``cls`` for the stream and each attribute set
    (the shape of the bridge's ``StoreAggregation``); every call is recorded."""

    def __init__(self, cls: Callable[..., Any], log: list[dict[str, Any]] | None = None) -> None:
        self.cls = cls
        self.created: list[dict[str, Any]] = []
        self.log: list[dict[str, Any]] = [] if log is None else log  # every aggregate() call, in order

    def _create_aggregation(self, instrument: Any, attributes: Any, reservoir_factory: Any,
                            start_time_unix_nano: int) -> Any:
        self.created.append({"instrument": instrument, "attributes": attributes, "start": start_time_unix_nano})
        return self.cls(self, attributes)


def _caller_match() -> Any:
    """The SDK ``_ViewInstrumentMatch`` on the call stack of the current ``aggregate``/``_create_aggregation``."""
    frame = sys._getframe(2)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if type(owner).__name__ == "_ViewInstrumentMatch":
            return owner
        frame = frame.f_back  # type: ignore[assignment]
    return None


class _Recorded:
    """Shared by the three point classes below: keeps what ``aggregate`` saw, like the bridge's ``_Point``."""

    def _setup(self, agg: Pick, attributes: Any) -> None:
        self._pick = agg
        self._attributes = attributes
        self.value = 0.0

    def aggregate(self, measurement: Any, should_sample_exemplar: bool = True) -> None:
        match = _caller_match()
        self._pick.log.append({"measurement": measurement, "match": match, "point": self,
                               "locked": None if match is None else match._lock.locked()})
        self.value += measurement.value


class RecordedSum(_Recorded, _sdk.SdkSum):
    def __init__(self, agg: Pick, attributes: Any) -> None:
        self._setup(agg, attributes)
        # What the SDK's View-conflict check reads on a sum (the bridge's _Sum sets the same two).
        self._instrument_is_monotonic = True
        self._instrument_aggregation_temporality = AggregationTemporality.DELTA

    def collect(self, temporality: Any, now: int) -> Any:
        return NumberDataPoint(dict(self._attributes or {}), 1, now, self.value)


class RecordedGauge(_Recorded, _sdk.SdkLastValue):
    def __init__(self, agg: Pick, attributes: Any) -> None:
        self._setup(agg, attributes)

    def collect(self, temporality: Any, now: int) -> Any:
        return NumberDataPoint(dict(self._attributes or {}), None, now, self.value)  # type: ignore[arg-type]


class RecordedHistogram(_Recorded, _sdk.SdkHistogram):
    def __init__(self, agg: Pick, attributes: Any) -> None:
        self._setup(agg, attributes)

    def collect(self, temporality: Any, now: int) -> Any:
        return HistogramDataPoint(dict(self._attributes or {}), 1, now, 1, self.value, (0, 1), (1.0,),
                                  self.value, self.value, [])


def _reservoirs(aggregation_type: type) -> Callable[..., SimpleFixedSizeExemplarReservoir]:
    return lambda **_: SimpleFixedSizeExemplarReservoir()


# --- (a) the SDK decides a stream's data type by isinstance on three aggregation classes --------------------

def test_data_type_follows_the_aggregation_class(make_provider: Callable[..., MeterProvider]) -> None:
    reader = InMemoryMetricReader()
    views = [View(instrument_name="coupling.requests", name="as_sum", aggregation=Pick(RecordedSum)),
             View(instrument_name="coupling.requests", name="as_gauge", aggregation=Pick(RecordedGauge)),
             View(instrument_name="coupling.requests", name="as_histogram", aggregation=Pick(RecordedHistogram))]
    provider = make_provider(reader, views=views)
    provider.get_meter("coupling").create_counter("coupling.requests", unit="1").add(3, {"route": "/a"})

    metrics = metrics_of(reader)
    assert set(metrics) == {"as_sum", "as_gauge", "as_histogram"}, (
        "the SDK no longer reports a stream for each View whose aggregation subclasses its own classes")
    as_sum, as_gauge, as_histogram = metrics["as_sum"].data, metrics["as_gauge"].data, metrics["as_histogram"].data
    assert isinstance(as_sum, Sum), f"a {_sdk.SdkSum.__name__} subclass no longer yields Sum: {as_sum!r}"
    assert as_sum.is_monotonic is True  # from the instrument (a Counter)
    assert as_sum.aggregation_temporality is AggregationTemporality.CUMULATIVE  # the reader's preference
    assert isinstance(as_gauge, Gauge), f"a {_sdk.SdkLastValue.__name__} subclass no longer yields Gauge"
    assert isinstance(as_histogram, HistogramData), (
        f"a {_sdk.SdkHistogram.__name__} subclass no longer yields Histogram: {as_histogram!r}")
    # The points are ours, as collect() returned them.
    assert [p.value for p in as_sum.data_points] == [3]
    assert [p.value for p in as_gauge.data_points] == [3]
    assert [(p.count, p.sum, p.explicit_bounds) for p in as_histogram.data_points] == [(1, 3, (1.0,))]
    assert all(dict(p.attributes) == {"route": "/a"} for m in metrics.values() for p in m.data.data_points)


def test_the_three_classes_are_the_ones_the_public_aggregations_create(
        make_provider: Callable[..., MeterProvider]) -> None:
    """``SdkSum`` & co. are what SumAggregation / LastValueAggregation / ExplicitBucketHistogramAggregation
    hand the SDK: the classes the reader storage tests."""
    meter = make_provider().get_meter("coupling")
    counter = meter.create_counter("coupling.c")
    for public, private in ((SumAggregation(), _sdk.SdkSum), (LastValueAggregation(), _sdk.SdkLastValue),
                            (ExplicitBucketHistogramAggregation(), _sdk.SdkHistogram)):
        created = public._create_aggregation(counter, {}, _reservoirs, 0)
        assert isinstance(created, private), f"{type(public).__name__} no longer creates a {private.__name__}"


# --- (b) how _ViewInstrumentMatch creates aggregations and hands them measurements --------------------------

def test_create_aggregation_once_per_stream_then_per_projected_attribute_set(
        make_provider: Callable[..., MeterProvider]) -> None:
    pick = Pick(RecordedSum)
    reader = InMemoryMetricReader()
    provider = make_provider(reader, views=[View(instrument_name="coupling.runs", attribute_keys={"status"},
                                                 aggregation=pick)])
    counter = provider.get_meter("coupling").create_counter("coupling.runs")
    assert pick.created == [], "the SDK now creates aggregations before the first measurement"

    counter.add(1, {"status": "ok", "host": "a"})
    counter.add(1, {"status": "ok", "host": "b"})  # the same projected set: no new aggregation
    counter.add(1, {"status": "failed"})
    counter.add(1)  # no attributes at all

    attributes = [c["attributes"] for c in pick.created]
    assert attributes == [None, {"status": "ok"}, {"status": "failed"}, {}], (
        "the SDK no longer calls _create_aggregation(instrument, None, ...) once for the stream and then once "
        f"per new View-projected attribute set: {attributes}")
    assert all(c["instrument"] is counter for c in pick.created)
    assert all(isinstance(a, dict) for a in attributes[1:]), "projected attributes are no longer a dict"
    assert pick.created[0]["start"] == 0 and all(c["start"] > 0 for c in pick.created[1:])
    points = metrics_of(reader)["coupling.runs"].data.data_points
    assert sorted((tuple(sorted(p.attributes.items())), p.value) for p in points) == [
        ((), 1), ((("status", "failed"),), 1), ((("status", "ok"),), 2)]


def test_create_aggregation_without_attribute_keys_gets_every_attribute(
        make_provider: Callable[..., MeterProvider]) -> None:
    pick = Pick(RecordedHistogram)
    provider = make_provider(InMemoryMetricReader(), views=[View(instrument_name="coupling.latency",
                                                                 aggregation=pick)])
    provider.get_meter("coupling").create_histogram("coupling.latency").record(0.5, {"a": "1", "b": True})
    assert [c["attributes"] for c in pick.created] == [None, {"a": "1", "b": True}]


RECORD: dict[str, Callable[[Meter], Callable[[float, dict[str, Any]], None]]] = {
    "counter": lambda m: m.create_counter("coupling.measured").add,
    "up_down_counter": lambda m: m.create_up_down_counter("coupling.measured").add,
    "histogram": lambda m: m.create_histogram("coupling.measured").record,
    "gauge": lambda m: m.create_gauge("coupling.measured").set,
}


@pytest.mark.parametrize("kind", sorted(RECORD))
def test_one_measurement_object_reaches_every_reader_storage_and_view_outside_the_lock(
        kind: str, make_provider: Callable[..., MeterProvider]) -> None:
    """The bridge records a measurement once and skips the same object when it comes back for the next
    reader's storage or the next View (``_state.last is measurement``); it records from ``aggregate``, which
    may create a series and so re-enter the SDK, so ``aggregate`` must run outside the match's lock."""
    log: list[dict[str, Any]] = []
    picks = (Pick(RecordedSum, log), Pick(RecordedSum, log))
    views = [View(instrument_name="coupling.measured", name="stream_a", aggregation=picks[0], attribute_keys={"a"}),
             View(instrument_name="coupling.measured", name="stream_b", aggregation=picks[1])]
    first, second = InMemoryMetricReader(), InMemoryMetricReader()
    record = RECORD[kind](make_provider(first, second, views=views).get_meter("coupling"))

    record(2.0, {"a": "x", "b": "y"})
    calls = list(log)
    assert len(calls) == 4, f"expected aggregate() once per reader storage and View (2 x 2), got {len(calls)}"
    measurement = calls[0]["measurement"]
    assert all(c["measurement"] is measurement for c in calls), (
        "the SDK no longer passes the SAME Measurement object to every reader's storage and View: the bridge "
        "would record one measurement several times")
    assert measurement.value == 2.0
    assert dict(measurement.attributes) == {"a": "x", "b": "y"}, (
        "Measurement.attributes should be the attributes as recorded, not a View's projection")
    for call in calls:
        assert call["match"] is not None, "aggregate() is no longer called from a _ViewInstrumentMatch"
        assert call["locked"] is False, "aggregate() is now called while the _ViewInstrumentMatch lock is held"
    assert len({id(c["match"]) for c in calls}) == 4  # two readers x two Views
    assert len({id(c["point"]) for c in calls}) == 4

    record(3.0, {"a": "x", "b": "y"})
    later = log[4:]
    assert len(later) == 4 and all(c["measurement"] is later[0]["measurement"] for c in later)
    assert later[0]["measurement"] is not measurement, "a new recording must be a new Measurement object"


# --- (c) View settings read through _sdk --------------------------------------------------------------------

def test_view_fields_are_the_settings_the_sdk_applies(make_provider: Callable[..., MeterProvider]) -> None:
    aggregation = ExplicitBucketHistogramAggregation((0.1, 1.0))
    view = View(instrument_name="coupling.latency", name="renamed_latency", description="shaped",
                attribute_keys={"route"}, aggregation=aggregation)
    fields = _sdk.view_fields(view)
    assert fields == {"name": "renamed_latency", "description": "shaped", "attribute_keys": {"route"},
                      "aggregation": aggregation}
    assert fields["aggregation"] is aggregation

    reader = InMemoryMetricReader()
    provider = make_provider(reader, views=[view])
    provider.get_meter("coupling").create_histogram("coupling.latency", unit="s").record(
        0.5, {"route": "/a", "method": "GET"})
    metrics = metrics_of(reader)
    assert set(metrics) == {fields["name"]}
    metric = metrics[fields["name"]]
    assert metric.description == fields["description"]
    (point,) = metric.data.data_points
    assert set(point.attributes) == fields["attribute_keys"]
    assert tuple(point.explicit_bounds) == _sdk.explicit_boundaries(aggregation) == (0.1, 1.0)


def test_view_fields_of_a_view_without_stream_settings() -> None:
    fields = _sdk.view_fields(View(instrument_name="coupling.x"))
    assert set(fields) == {"name", "description", "attribute_keys", "aggregation"}
    assert fields["name"] is None and fields["description"] is None and fields["attribute_keys"] is None
    assert isinstance(fields["aggregation"], DefaultAggregation)
    assert isinstance(_sdk.view_fields(View(instrument_name="x", aggregation=DropAggregation()))["aggregation"],
                      DropAggregation)


def test_explicit_boundaries(make_provider: Callable[..., MeterProvider]) -> None:
    assert _sdk.explicit_boundaries(ExplicitBucketHistogramAggregation([1, 2.5, 10])) == (1.0, 2.5, 10.0)
    assert all(isinstance(b, float) for b in _sdk.explicit_boundaries(ExplicitBucketHistogramAggregation([1, 2])) or ())
    assert _sdk.explicit_boundaries(ExplicitBucketHistogramAggregation([])) == ()
    # None means "not set by the View": the SDK then takes the instrument's advisory boundaries, which the
    # catalogue sets to its buckets; views.py keeps the catalogue's buckets in that case.
    unset = ExplicitBucketHistogramAggregation()
    assert _sdk.explicit_boundaries(unset) is None
    reader = InMemoryMetricReader()
    provider = make_provider(reader, views=[View(instrument_name="coupling.latency", aggregation=unset)])
    provider.get_meter("coupling").create_histogram(
        "coupling.latency", explicit_bucket_boundaries_advisory=[0.25, 0.5]).record(0.3)
    (point,) = metrics_of(reader)["coupling.latency"].data.data_points
    assert tuple(point.explicit_bounds) == (0.25, 0.5)


VIEW_CASES: list[tuple[str, dict[str, Any], str, str, str, str, bool]] = [
    # (id, View kwargs, meter, instrument method, instrument name, unit, expected match)
    ("exact name", {"instrument_name": "coupling.runs"}, "coupling", "create_counter", "coupling.runs", "1", True),
    ("name case-insensitive", {"instrument_name": "COUPLING.Runs"}, "coupling", "create_counter",
     "coupling.runs", "1", True),
    ("other name", {"instrument_name": "coupling.other"}, "coupling", "create_counter", "coupling.runs", "1", False),
    ("wildcard", {"instrument_name": "coupling.*"}, "coupling", "create_counter", "coupling.runs", "1", True),
    ("wildcard miss", {"instrument_name": "app.*"}, "coupling", "create_counter", "coupling.runs", "1", False),
    ("documented name and type", {"instrument_name": "tuist_runs_total", "instrument_type": Counter}, "app",
     "create_counter", "tuist_runs_total", "1", True),
    ("type miss", {"instrument_type": Histogram}, "coupling", "create_counter", "coupling.runs", "1", False),
    ("type hit", {"instrument_type": Histogram}, "coupling", "create_histogram", "coupling.latency", "s", True),
    ("meter hit", {"meter_name": "tuist.telemetry"}, "tuist.telemetry", "create_counter", "tuist.runs", "1", True),
    ("meter miss", {"instrument_name": "tuist.runs", "meter_name": "tuist.telemetry"}, "app", "create_counter",
     "tuist.runs", "1", False),
    ("unit hit", {"instrument_unit": "s"}, "coupling", "create_histogram", "coupling.latency", "s", True),
    ("unit miss", {"instrument_unit": "s"}, "coupling", "create_histogram", "coupling.latency", "ms", False),
]


@pytest.mark.parametrize(("view_kwargs", "meter_name", "method", "name", "unit", "expected"),
                         [c[1:] for c in VIEW_CASES], ids=[c[0] for c in VIEW_CASES])
def test_view_matches_agrees_with_the_sdk(view_kwargs: dict[str, Any], meter_name: str, method: str, name: str,
                                          unit: str, expected: bool,
                                          make_provider: Callable[..., MeterProvider]) -> None:
    view = View(aggregation=DropAggregation(), **view_kwargs)
    reader = InMemoryMetricReader()
    provider = make_provider(reader, views=[view])
    instrument = getattr(provider.get_meter(meter_name), method)(name, unit=unit)
    assert _sdk.view_matches(view, instrument) is expected
    (instrument.add if hasattr(instrument, "add") else instrument.record)(1)
    dropped = name.lower() not in metrics_of(reader)
    assert dropped is expected, "view_matches() disagrees with the View the SDK applied"


# --- (d) the current span, read straight from the context ---------------------------------------------------

def test_current_span_reads_the_context_variable_directly() -> None:
    """If the SDK's runtime-context internals moved, current_span falls back to the slower public read: still
    correct, but every histogram record would pay for it; this makes that visible."""
    assert _sdk.current_span.__name__ == "read", "the fast context-variable read is no longer available"


def test_current_span_is_the_span_made_current() -> None:
    tracer = TracerProvider().get_tracer("coupling")
    assert _sdk.current_span() is None, "outside any span current_span() must be None (not INVALID_SPAN)"
    span = tracer.start_span("used")
    with trace.use_span(span, end_on_exit=True):
        assert _sdk.current_span() is span
        assert _sdk.current_span() is trace.get_current_span()
        with tracer.start_as_current_span("inner") as inner:
            assert _sdk.current_span() is inner
            assert inner.get_span_context().trace_id == span.get_span_context().trace_id
        assert _sdk.current_span() is span
    assert _sdk.current_span() is None
    with tracer.start_as_current_span("started") as started:
        assert _sdk.current_span() is started
        assert _sdk.current_span().get_span_context().is_valid
    assert _sdk.current_span() is None


def test_current_span_follows_threads_and_tasks() -> None:
    tracer = TracerProvider().get_tracer("coupling")
    seen: dict[str, Any] = {}
    with tracer.start_as_current_span("outer") as outer:
        thread = threading.Thread(target=lambda: seen.setdefault("thread", _sdk.current_span()))
        thread.start()
        thread.join(10)

        async def task() -> Any:
            return _sdk.current_span()
        seen["task"] = asyncio.run(task())  # asyncio.run copies the current context
    assert seen["thread"] is None, "a new thread starts with an empty context"
    assert seen["task"] is outer


# --- (e) checked meters -------------------------------------------------------------------------------------

CREATE_TYPES: dict[str, type] = {
    "create_counter": Counter, "create_up_down_counter": UpDownCounter, "create_histogram": Histogram,
    "create_gauge": SyncGauge, "create_observable_counter": ObservableCounter,
    "create_observable_gauge": ObservableGauge, "create_observable_up_down_counter": ObservableUpDownCounter,
}


@pytest.fixture
def checked(make_provider: Callable[..., MeterProvider]) -> tuple[Meter, list[tuple[Any, ...]]]:
    calls: list[tuple[Any, ...]] = []

    def check(meter: Meter, method: str, name: str, unit: str) -> None:
        calls.append((meter, method, name, unit))
        if name.startswith("refused"):
            raise ValueError(f"refused {name}")

    cls = _sdk.make_checked(check)
    meter = make_provider().get_meter("coupling")
    assert _sdk.adopt(meter, cls) is meter
    assert type(meter) is cls
    return meter, calls


def test_make_checked_covers_every_create_method_of_the_sdk_meter() -> None:
    cls = _sdk.make_checked(lambda *_: None)
    sdk_methods = {n for n in dir(Meter) if n.startswith("create_")}
    assert sdk_methods == set(CREATE_TYPES), f"the SDK Meter's create_* methods changed: {sorted(sdk_methods)}"
    missing = sorted(n for n in sdk_methods if n not in vars(cls))
    assert not missing, f"make_checked() does not check {missing}: those instruments would bypass the catalogue"
    assert all(vars(cls)[n].__name__ == n for n in sdk_methods)
    assert issubclass(cls, Meter)


def _positional(method: str, name: str, unit: str) -> tuple[Any, ...]:
    """Positional arguments up to ``unit`` in the order the SDK's signature declares them."""
    args: list[Any] = [name]
    for param in list(inspect.signature(getattr(Meter, method)).parameters.values())[2:]:
        if param.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD:
            break
        if param.name == "unit":
            args.append(unit)
            break
        args.append([] if param.name == "callbacks" else param.default)
    else:
        pytest.fail(f"{method} no longer takes unit positionally")
    return tuple(args)


@pytest.mark.parametrize("method", sorted(CREATE_TYPES))
@pytest.mark.parametrize("style", ["keyword", "positional", "no unit"])
def test_checked_meter_checks_then_delegates(method: str, style: str,
                                             checked: tuple[Meter, list[tuple[Any, ...]]]) -> None:
    meter, calls = checked
    name = f"coupling.{method}.{style.replace(' ', '_')}"
    if style == "keyword":
        instrument = getattr(meter, method)(name, unit="ms", description="d")
    elif style == "positional":
        instrument = getattr(meter, method)(*_positional(method, name, "ms"))
    else:
        instrument = getattr(meter, method)(name)
    unit = "" if style == "no unit" else "ms"
    assert calls == [(meter, method, name, unit)], f"{method} ({style}) called the check with {calls}"
    assert isinstance(instrument, CREATE_TYPES[method]), f"{method} did not delegate to the SDK: {instrument!r}"
    assert instrument.name == name and instrument.unit == unit


def test_checked_meter_positional_observable_gauge_with_callbacks(
        checked: tuple[Meter, list[tuple[Any, ...]]]) -> None:
    meter, calls = checked
    callbacks = [lambda options: []]
    gauge = meter.create_observable_gauge("coupling.temperature", callbacks, "Cel")
    assert calls == [(meter, "create_observable_gauge", "coupling.temperature", "Cel")]
    assert isinstance(gauge, ObservableGauge) and gauge.unit == "Cel"
    meter.create_observable_gauge("coupling.pressure", callbacks, "Pa", "how hard")
    meter.create_observable_counter("coupling.ticks", None, "1")
    meter.create_histogram("coupling.wait", "s", "", explicit_bucket_boundaries_advisory=[1.0])
    meter.create_counter(name="coupling.keyword_name", unit="By")
    assert calls[1:] == [(meter, "create_observable_gauge", "coupling.pressure", "Pa"),
                         (meter, "create_observable_counter", "coupling.ticks", "1"),
                         (meter, "create_histogram", "coupling.wait", "s"),
                         (meter, "create_counter", "coupling.keyword_name", "By")]


def test_a_refused_instrument_is_not_created(checked: tuple[Meter, list[tuple[Any, ...]]],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    meter, calls = checked
    delegated: list[str] = []
    monkeypatch.setattr(Meter, "create_counter", lambda self, name, *a, **k: delegated.append(name))
    with pytest.raises(ValueError, match="refused"):
        meter.create_counter("refused.counter", "1")
    assert calls == [(meter, "create_counter", "refused.counter", "1")]
    assert delegated == [], "the SDK instrument was created although the check refused it"
    meter.create_counter("coupling.allowed")
    assert delegated == ["coupling.allowed"]


def test_adopt_only_turns_plain_sdk_meters(make_provider: Callable[..., MeterProvider]) -> None:
    cls = _sdk.make_checked(lambda *_: None)
    provider = make_provider()
    meter = provider.get_meter("coupling")
    assert type(meter) is Meter, "the SDK's get_meter no longer returns a plain Meter"
    assert provider.get_meter("coupling") is meter  # the SDK caches meters: adopt() changes the cached one
    _sdk.adopt(meter, cls)
    assert type(provider.get_meter("coupling")) is cls
    other = _sdk.make_checked(lambda *_: None)
    assert type(_sdk.adopt(meter, other)) is cls  # already adopted: left alone

    class Custom(Meter):
        pass

    custom = provider.get_meter("custom")
    custom.__class__ = Custom
    assert type(_sdk.adopt(custom, cls)) is Custom


# --- (f) excluding ------------------------------------------------------------------------------------------

def test_excluding_keeps_the_view_and_skips_reserved_instruments(
        make_provider: Callable[..., MeterProvider]) -> None:
    aggregation = LastValueAggregation()
    inner = View(instrument_name="coupling.queue", name="queue_depth", description="renamed",
                 attribute_keys={"queue"}, aggregation=aggregation)
    wide = View(instrument_name="*", aggregation=DropAggregation())
    reserved_names = {"tuist.runs", "tuist_runs_total"}

    def reserved(instrument: Any) -> bool:
        return bool(instrument.name in reserved_names)

    wrapped, wide_wrapped = _sdk.excluding(inner, reserved), _sdk.excluding(wide, reserved)
    assert isinstance(wrapped, View)
    assert _sdk.view_fields(wrapped) == _sdk.view_fields(inner)
    assert _sdk.view_fields(wrapped)["aggregation"] is aggregation
    assert repr(wrapped) == repr(inner)

    reader = InMemoryMetricReader()
    provider = make_provider(reader, views=[wrapped, wide_wrapped])
    meter = provider.get_meter("coupling")
    queue = meter.create_counter("coupling.queue")
    runs = meter.create_counter("tuist.runs")
    documented = provider.get_meter("app").create_counter("tuist_runs_total")
    other = meter.create_counter("coupling.other")
    assert _sdk.view_matches(wrapped, queue) and _sdk.view_matches(wide_wrapped, other)
    assert not _sdk.view_matches(wide_wrapped, runs) and not _sdk.view_matches(wide_wrapped, documented)
    for instrument in (queue, runs, documented, other):
        instrument.add(2, {"queue": "q", "host": "h"})

    metrics = metrics_of(reader)
    # The wrapped View's settings apply to what it selects ...
    assert isinstance(metrics["queue_depth"].data, Gauge)
    assert metrics["queue_depth"].description == "renamed"
    assert [dict(p.attributes) for p in metrics["queue_depth"].data.data_points] == [{"queue": "q"}]
    # ... a catch-all View drops everything else, except the reserved instruments, which keep their default.
    assert "coupling.other" not in metrics
    assert set(metrics) == {"queue_depth", "tuist.runs", "tuist_runs_total"}
    assert isinstance(metrics["tuist.runs"].data, Sum)
    assert [dict(p.attributes) for p in metrics["tuist.runs"].data.data_points] == [{"queue": "q", "host": "h"}]


# --- (g) is_registered --------------------------------------------------------------------------------------

@pytest.mark.parametrize("make_reader", [InMemoryMetricReader, lambda: PrometheusReader(None)],
                         ids=["InMemoryMetricReader", "PrometheusReader"])
def test_is_registered(make_reader: Callable[[], Any], make_provider: Callable[..., MeterProvider]) -> None:
    reader = make_reader()
    assert _sdk.is_registered(reader) is False
    make_provider(reader)
    assert _sdk.is_registered(reader) is True

    added = make_reader()
    provider = make_provider()
    assert _sdk.is_registered(added) is False
    provider.add_metric_reader(added)
    assert _sdk.is_registered(added) is True
    provider.remove_metric_reader(added)
    assert _sdk.is_registered(added) is False


def test_the_global_meter_provider_is_a_proxy_until_one_is_set() -> None:
    """``_sdk.global_meter_provider`` tells "none set" from "set" by the API's proxy class; OpenTelemetry lets a
    process set the global once, so this runs in a fresh interpreter."""
    import subprocess

    code = ("from opentelemetry import metrics\n"
            "from opentelemetry.sdk.metrics import MeterProvider\n"
            "from telemetry import _sdk\n"
            "assert _sdk.global_meter_provider() is None, 'an unset global must read as None'\n"
            "provider = MeterProvider()\n"
            "metrics.set_meter_provider(provider)\n"
            "assert _sdk.global_meter_provider() is provider, 'a set global must be returned'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
