"""``PrometheusReader``: an OpenTelemetry ``MetricReader`` that renders the Prometheus text exposition.

Registered on the ``MeterProvider`` like any reader (cumulative temporality), it collects the SDK's metrics on
each scrape and renders them together with the catalogue streams, which it reads from the store directly (the
catalogue's aggregations report nothing to it: see ``telemetry.bridge.quiet``).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

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
from telemetry.catalogue import sample_names
from telemetry.exposition.render import Renderer, render, render_otel
from telemetry.exposition.sides import pid_label
from telemetry.registry import Registry

if TYPE_CHECKING:
    from telemetry.workers import ProcessMode

_CUMULATIVE: dict[type, AggregationTemporality] = {
    kind: AggregationTemporality.CUMULATIVE
    for kind in (Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter, ObservableGauge)
}


class PrometheusReader(MetricReader):
    """Renders ``registry`` (exact catalogue names) plus the SDK's own metrics (standard naming).

    In multi-process mode (``multiprocess``) a scrape renders the merged view of every process instead, with
    this process's own SDK metrics (``own_text``) among the per-process ones.
    """

    def __init__(self, registry: Registry | None, *, target_info: bool = True, scope_labels: bool = False,
                 multiprocess: ProcessMode | None = None) -> None:
        super().__init__(preferred_temporality=_CUMULATIVE)
        self._registry = registry
        self._target_info = target_info
        self._scope_labels = scope_labels
        self._data: MetricsData | None = None
        self._scrape_lock = threading.Lock()
        self._renderer = Renderer()
        self._multiprocess = multiprocess  # started by setup() once the SDK's instruments exist

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        self._data = metrics_data

    def _collect_now(self) -> MetricsData | None:
        """The SDK's metrics now (the catalogue's gauge callbacks run too); the scrape lock is held."""
        self._data = None
        registry = self._registry
        if _sdk.is_registered(self):
            with bridge.quiet():
                self.collect()
        if registry is not None and not registry.sdk_observes_gauges:
            registry.observe_gauges()
        return self._data

    def scrape(self) -> str:
        """Collect and render one exposition. Concurrent scrapes are serialised."""
        if self._multiprocess is not None:
            return self._multiprocess.render()
        with self._scrape_lock:
            data = self._collect_now()
            return render(self._registry, data, target_info=self._target_info, scope_labels=self._scope_labels,
                          renderer=self._renderer)

    def own_text(self) -> str:
        """This process's own SDK metrics with a ``pid`` label (multi-process mode), the catalogue left out."""
        with self._scrape_lock:
            data = self._collect_now()
            taken = {n for s in self._registry.streams() for n in sample_names(s.name, s.kind)} \
                if self._registry is not None else set()
            out: list[str] = []
            render_otel(data, out, target_info=self._target_info, scope_labels=self._scope_labels, taken=taken,
                        renderer=self._renderer, extra=pid_label())
            return "".join(out)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._data = None
