"""``PrometheusReader``: an OpenTelemetry ``MetricReader`` that renders the Prometheus text exposition.

Registered on the ``MeterProvider`` like any reader (cumulative temporality), it collects the SDK's metrics on
each scrape and renders them together with the catalogue streams, which it reads from the store directly (the
catalogue's aggregations report nothing to it: see ``telemetry.bridge.quiet``).
"""

from __future__ import annotations

import threading
from typing import Any

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricReader, MetricsData

from telemetry import _sdk, bridge
from telemetry.exposition.render import Renderer, render
from telemetry.registry import Registry

_CUMULATIVE: dict[type, AggregationTemporality] = {
    kind: AggregationTemporality.CUMULATIVE
    for kind in (Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter, ObservableGauge)
}


class PrometheusReader(MetricReader):
    """Renders ``registry`` (exact catalogue names) plus the SDK's own metrics (standard naming)."""

    def __init__(self, registry: Registry | None, *, target_info: bool = True, scope_labels: bool = False) -> None:
        super().__init__(preferred_temporality=_CUMULATIVE)
        self._registry = registry
        self._target_info = target_info
        self._scope_labels = scope_labels
        self._data: MetricsData | None = None
        self._scrape_lock = threading.Lock()
        self._renderer = Renderer()

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        self._data = metrics_data

    def scrape(self) -> str:
        """Collect and render one exposition. Concurrent scrapes are serialised."""
        with self._scrape_lock:
            self._data = None
            registry = self._registry
            if _sdk.is_registered(self):
                with bridge.quiet():
                    self.collect()
            if registry is not None and not registry.sdk_observes_gauges:
                registry.observe_gauges()
            return render(registry, self._data, target_info=self._target_info, scope_labels=self._scope_labels,
                          renderer=self._renderer)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._data = None
