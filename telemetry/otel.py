"""The catalogue registry in OpenTelemetry's data model.

``to_metrics_data`` gives the registry's current state as the ``MetricsData`` an SDK reader would see for
the same measurements (cumulative temporality), so the catalogue can be pushed over OTLP beside the SDK's own
metrics (``OtlpCatalogueReader``), and tests can compare both paths point for point.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from telemetry.registry import CounterFamily, GaugeFamily, HistogramFamily, Registry

SCOPE = InstrumentationScope("telemetry.catalogue", "1")
_CUMULATIVE = AggregationTemporality.CUMULATIVE


def to_scope_metrics(registry: Registry, start_time_unix_nano: int) -> ScopeMetrics:
    """The registry as one scope of OpenTelemetry metrics (families with no series are left out)."""
    now = time.time_ns()
    metrics: list[Metric] = []
    registry.observe_gauges()
    for family in registry.families():
        spec = family.spec
        points: list[Any] = []
        for child in family.series():
            attrs: dict[str, Any] = ({"otel.metric.overflow": True} if child.overflow
                                     else dict(zip(spec.labels, child.labels, strict=True)))
            if isinstance(family, HistogramFamily):
                counts, total, count = child.snapshot()
                if not count:  # the SDK exports no point for a histogram that was never recorded to
                    continue
                points.append(HistogramDataPoint(attrs, start_time_unix_nano, now, count, total, tuple(counts),
                                                 spec.buckets, child.min, child.max))
            elif isinstance(family, CounterFamily):
                points.append(NumberDataPoint(attrs, start_time_unix_nano, now, child.value))
            else:  # gauges carry no start time, as the SDK's last-value aggregation does
                points.append(NumberDataPoint(attrs, None, now, child.value))  # type: ignore[arg-type]
        if not points:
            continue
        if isinstance(family, HistogramFamily):
            data: Any = Histogram(points, _CUMULATIVE)
        elif isinstance(family, GaugeFamily):
            data = Gauge(points)
        else:
            data = Sum(points, _CUMULATIVE, True)
        metrics.append(Metric(spec.name, spec.help, spec.unit, data))
    return ScopeMetrics(SCOPE, metrics, "")


def to_metrics_data(registry: Registry, resource: Resource, start_time_unix_nano: int) -> MetricsData:
    return MetricsData([ResourceMetrics(resource, [to_scope_metrics(registry, start_time_unix_nano)], "")])


class OtlpCatalogueReader(PeriodicExportingMetricReader):
    """A periodic OTLP reader whose exports also carry the catalogue registry."""

    def __init__(self, exporter: Any, registry: Registry, **kwargs: Any) -> None:
        # Set before the base class starts its export thread.
        self._registry = registry
        self._start = time.time_ns()
        self._resource = Resource.get_empty()
        self._received = False
        super().__init__(exporter, **kwargs)

    def _set_meter_provider(self, meter_provider: Any) -> None:
        super()._set_meter_provider(meter_provider)
        self._resource = meter_provider._sdk_config.resource

    def collect(self, timeout_millis: float = 10_000) -> None:  # type: ignore[misc]
        # The SDK skips _receive_metrics when it has no metrics of its own (runtime metrics off, no
        # instrumentation): the catalogue must be exported all the same. (collect is marked final in the
        # SDK; this override only adds a call after the base behaviour.)
        self._received = False
        super().collect(timeout_millis=timeout_millis)
        if not self._received and getattr(self, "_collect", None) is not None:
            self._receive_metrics(MetricsData([]), timeout_millis)

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        self._received = True
        scope = to_scope_metrics(self._registry, self._start)
        if metrics_data is not None and metrics_data.resource_metrics:
            first = metrics_data.resource_metrics[0]
            metrics_data = MetricsData([ResourceMetrics(first.resource, [*first.scope_metrics, scope],
                                                        first.schema_url), *metrics_data.resource_metrics[1:]])
        else:
            metrics_data = MetricsData([ResourceMetrics(self._resource, [scope], self._resource.schema_url)])
        super()._receive_metrics(metrics_data, timeout_millis, **kwargs)
