"""Views over the catalogue: what shape each catalogue instrument's streams take.

By default a catalogue instrument has one stream under its documented name, labels and buckets. A user's
OpenTelemetry ``View`` that selects a catalogue instrument (by its instrument name, ``tuist.runs``, or by its
documented name, ``tuist_runs_total``) replaces that default, as Views do in OpenTelemetry: its ``name``
renames the stream, ``attribute_keys`` keeps only those labels (series that differ only in dropped labels
merge), an ``ExplicitBucketHistogramAggregation`` changes a histogram's buckets, ``DropAggregation`` drops
the metric. Several matching Views give several streams. What cannot apply raises ``ValueError`` at setup.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.view import (
    DefaultAggregation,
    DropAggregation,
    ExplicitBucketHistogramAggregation,
    LastValueAggregation,
    SumAggregation,
    View,
)

from telemetry import _sdk
from telemetry.catalogue import CATALOGUE, SCOPE_NAME, Kind, MetricSpec
from telemetry.store import StreamShape

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_FITS = {Kind.COUNTER: SumAggregation, Kind.GAUGE: LastValueAggregation,
         Kind.HISTOGRAM: ExplicitBucketHistogramAggregation}


def create_instrument(meter: object, spec: MetricSpec, name: str | None = None, **kwargs: object) -> object:
    """The OpenTelemetry instrument of ``spec`` on ``meter`` (named ``spec.instrument`` unless ``name``)."""
    name = name or spec.instrument
    if spec.kind is Kind.COUNTER:
        return meter.create_counter(name, unit=spec.unit, description=spec.help)  # type: ignore[attr-defined]
    if spec.kind is Kind.HISTOGRAM:
        return meter.create_histogram(name, unit=spec.unit, description=spec.help,  # type: ignore[attr-defined]
                                      explicit_bucket_boundaries_advisory=list(spec.buckets))
    return meter.create_observable_gauge(name, unit=spec.unit, description=spec.help,  # type: ignore[attr-defined]
                                         **kwargs)


def resolve(views: Sequence[View], catalogue: Iterable[MetricSpec] = CATALOGUE) -> dict[str, tuple[StreamShape, ...]]:
    """Stream shapes for every catalogue entry some View selects (entries no View selects keep their
    default). Raises ``ValueError`` for a View that cannot apply to a catalogue metric it selects."""
    for view in views:
        if not isinstance(view, View):
            raise TypeError(f"views must be opentelemetry.sdk.metrics.view.View objects, got {view!r}")
    shapes: dict[str, tuple[StreamShape, ...]] = {}
    if not views:
        return shapes
    # The SDK's own matching decides which Views select which instrument: match against real instruments on
    # a scratch provider (no readers, nothing exported), under the instrument name and the documented name.
    scratch = MeterProvider(shutdown_on_exit=False)
    ours, theirs = scratch.get_meter(SCOPE_NAME), scratch.get_meter("views")
    for spec in catalogue:
        candidates = (create_instrument(ours, spec), create_instrument(theirs, spec, spec.name))
        selecting = [v for v in views if any(_sdk.view_matches(v, i) for i in candidates)]  # type: ignore[arg-type]
        if selecting:
            shapes[spec.name] = tuple(s for v in selecting if (s := _shape(spec, v)) is not None)
    return shapes


def describe(view: View) -> str:
    """A View as its user wrote it: what it selects and what it sets."""
    fields = {**_sdk.view_selection(view), **{k: v for k, v in _sdk.view_fields(view).items() if k != "aggregation"}}
    shown = ", ".join(f"{k}={v!r}" for k, v in fields.items() if v is not None)
    return f"View({shown}, aggregation={type(_sdk.view_fields(view)['aggregation']).__name__})"


def _shape(spec: MetricSpec, view: View) -> StreamShape | None:
    fields = _sdk.view_fields(view)
    aggregation = fields["aggregation"]
    if isinstance(aggregation, DropAggregation):
        return None
    buckets = spec.buckets
    if isinstance(aggregation, ExplicitBucketHistogramAggregation) and spec.kind is Kind.HISTOGRAM:
        bounds = _sdk.explicit_boundaries(aggregation)
        if bounds is not None:
            buckets = bounds
            if not buckets or list(buckets) != sorted(set(buckets)) or not all(map(math.isfinite, buckets)):
                raise ValueError(f"{describe(view)}: {spec.name} needs finite, strictly increasing bucket boundaries, "
                                 f"got {list(buckets)}")
    elif not isinstance(aggregation, DefaultAggregation | _FITS[spec.kind]):
        raise ValueError(f"{describe(view)} cannot apply to {spec.name}: it is a {spec.kind.value} and the View's "
                         f"{type(aggregation).__name__} does not fit it (use the default aggregation, "
                         f"{_FITS[spec.kind].__name__} or DropAggregation)")
    name = fields["name"] or spec.name
    if not _NAME.fullmatch(name):
        raise ValueError(f"{describe(view)}: {name!r} is not a valid Prometheus metric name")
    keys = fields["attribute_keys"]
    labels = spec.labels if keys is None else tuple(n for n in spec.labels if n in keys)
    return StreamShape(name, fields["description"] or spec.help, labels, buckets)
