"""Prometheus remote write straight from each process, through the maintained
``opentelemetry-exporter-prometheus-remote-write`` exporter (the ``remote-write`` extra).

What the stock exporter (0.66b1) does, and what ``RemoteWriteExporter`` changes so that every series arrives
under the name and labels a scrape of ``/metrics`` gives:

- names: it appends the OpenTelemetry unit verbatim (``tuist_cache_uploaded_bytes`` with unit ``By`` becomes
  ``tuist_cache_uploaded_bytes_By``, ``tuist_http_request_duration_nanosecond`` (``ns``) becomes
  ``..._nanosecond_ns``) and replaces characters outside ``[a-zA-Z0-9_:]`` by ``_``; it adds no ``_total``.
  Here the catalogue's streams keep their names unchanged (the unit is not appended) and every other metric
  (runtime, instrumentation libraries) gets the name our ``/metrics`` gives it (``otel_name``).
- histograms: it writes the buckets under the bare name (``X{le=...}``, not ``X_bucket``), with each bucket's
  own count instead of the cumulative count Prometheus expects (so ``le="+Inf"`` is not ``X_count`` and
  ``histogram_quantile`` is wrong), and ``le`` as Python's ``str()`` of the bound (``"100"``, ``"1800000"``
  where ``/metrics`` writes ``"100.0"``, ``"1.8e+06"``); a bound of 0 loses its ``le``. Here: ``X_bucket``,
  cumulative, ``le`` as ``/metrics`` writes it.
- Sum and Gauge: one sample per data point, the value as is (cumulative temporality is requested for every
  instrument kind); exponential histograms are dropped with a warning; exemplars and metadata (TYPE/HELP)
  are not sent.
- labels: data point attributes, sanitised (``.`` to ``_``); keys that sanitise alike would repeat a label
  (Prometheus refuses the whole request), so here they are merged as ``/metrics`` does, values rendered alike.
- resource: by default every resource attribute becomes a label on every series (``service_name``,
  ``service_instance_id``, ``telemetry_sdk_*``); no ``job``, ``instance`` or ``target_info``. A point attribute
  of the same name repeats the label: the runtime metrics' ``application_info`` has ``service_name``, so with
  runtime metrics on Prometheus refuses every export whole (``label name "service_name" is not unique``). Here, as
  OpenTelemetry's Prometheus compatibility rules say: ``job`` = ``service.namespace/service.name`` (or
  ``service.name``), ``instance`` = ``service.instance.id`` (``setup()`` sets it to host:pid, so processes
  never share a series), and a ``target_info`` series with the other resource attributes. A data point's own
  ``job``/``instance`` attribute becomes ``exported_job``/``exported_instance``.
- transport: one snappy-compressed protobuf POST (remote write 1.0) per export with ``timeout`` (default
  30 s; here ``timeout_s``, default 2 s), no retries; a failed export is logged and its data is lost (the next
  export sends the cumulative values again).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    Metric,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, SERVICE_NAMESPACE, Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from telemetry.catalogue import SCOPE_NAME, Kind, sample_names
from telemetry.export import DEFAULT_EXPORT_TIMEOUT_S, periodic_reader
from telemetry.exposition.labels import BUCKET_LABEL, label_pairs, reserved_names
from telemetry.exposition.render import format_float, otel_name

try:
    from opentelemetry.exporter.prometheus_remote_write import PrometheusRemoteWriteMetricsExporter
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("Prometheus remote write needs the remote-write extra: "
                      "pip install 'tuist-telemetry[remote-write]'") from exc

TARGET_INFO = "target_info"
_TARGET_SCOPE = InstrumentationScope("telemetry.remote_write")
_RESOURCE_LABELS = {SERVICE_NAME, SERVICE_NAMESPACE, SERVICE_INSTANCE_ID}


def job_and_instance(resource: Resource) -> dict[str, str]:
    """``job`` and ``instance`` from a resource, by OpenTelemetry's Prometheus compatibility rules."""
    attrs = resource.attributes
    name = str(attrs.get(SERVICE_NAME, "unknown_service"))
    namespace = str(attrs.get(SERVICE_NAMESPACE, ""))
    labels = {"job": f"{namespace}/{name}" if namespace else name}
    instance = attrs.get(SERVICE_INSTANCE_ID)
    if instance is not None:
        labels["instance"] = str(instance)
    return labels


def _labels(attributes: Mapping[str, Any] | None, target: Mapping[str, str],
            reserved: frozenset[str]) -> dict[str, str]:
    """Attributes as Prometheus label names and values, as ``/metrics`` renders them (one sanitiser,
    ``telemetry.exposition.labels``), plus ``target``; an attribute named like a target label becomes
    ``exported_<name>``."""
    pairs = label_pairs(attributes, reserved)
    renamed: dict[str, list[str]] = {}
    for name, value in pairs:
        renamed.setdefault(f"exported_{name}" if name in target else name, []).append(value)
    return {**{k: ";".join(v) for k, v in renamed.items()}, **target}


class RemoteWriteExporter(PrometheusRemoteWriteMetricsExporter):
    """The stock remote-write exporter, sending the names, labels and histogram series a scrape of
    ``/metrics`` would give (see the module docstring for what it changes and why)."""

    def __init__(self, endpoint: str, *, timeout_s: float = DEFAULT_EXPORT_TIMEOUT_S,
                 headers: Mapping[str, str] | None = None, basic_auth: Mapping[str, str] | None = None,
                 tls_config: Mapping[str, Any] | None = None, target_info: bool = True) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        # The stock signature annotates its optional arguments as plain dicts and the timeout as int.
        options: dict[str, Any] = {"timeout": timeout_s, "headers": dict(headers) if headers else None,
                                   "basic_auth": dict(basic_auth) if basic_auth else None,
                                   "tls_config": dict(tls_config) if tls_config else None}
        super().__init__(endpoint, resources_as_labels=False, **options)
        self.target_info = target_info

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        data = self.prometheus_data(metrics_data)
        if not any(m.data.data_points for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics):
            return MetricExportResult.SUCCESS  # the stock exporter logs an error and fails an empty export
        result: MetricExportResult = super().export(data, timeout_millis, **kwargs)
        return result

    # -- MetricsData as Prometheus sees it ----------------------------------------------------------------
    def prometheus_data(self, data: MetricsData) -> MetricsData:
        """``data`` renamed and relabelled for Prometheus: units folded into names as ``/metrics`` does (none
        for the catalogue), ``job``/``instance`` on every point, ``target_info`` per resource."""
        out: list[ResourceMetrics] = []
        for rm in data.resource_metrics:
            target = job_and_instance(rm.resource)
            taken: set[str] = set()
            catalogue = [sm for sm in rm.scope_metrics if sm.scope.name == SCOPE_NAME]
            others = [sm for sm in rm.scope_metrics if sm.scope.name != SCOPE_NAME]
            scopes: list[ScopeMetrics] = []
            for sm in (*catalogue, *others):  # the catalogue's names first, as /metrics reserves them
                metrics = [m for m in (self._metric(m, sm.scope.name == SCOPE_NAME, target, taken)
                                       for m in sm.metrics) if m is not None]
                scopes.append(replace(sm, metrics=metrics))
            if self.target_info and TARGET_INFO not in taken:
                scopes.append(ScopeMetrics(_TARGET_SCOPE, [self._target_info(rm.resource, target)], ""))
            out.append(replace(rm, scope_metrics=scopes))
        return MetricsData(out)

    @staticmethod
    def _metric(metric: Metric, catalogue: bool, target: Mapping[str, str], taken: set[str]) -> Metric | None:
        data: Any = metric.data
        if isinstance(data, Sum):
            kind = Kind.COUNTER if data.is_monotonic else Kind.GAUGE
        elif isinstance(data, Gauge):
            kind = Kind.GAUGE
        elif isinstance(data, Histogram):
            kind = Kind.HISTOGRAM
        else:  # exponential histograms: no classic Prometheus equivalent (the stock exporter drops them too)
            return None
        name = metric.name if catalogue else otel_name(metric.name, metric.unit or "", counter=kind is Kind.COUNTER,
                                                        gauge=kind is Kind.GAUGE)
        samples = sample_names(name, kind)
        if any(s in taken for s in samples):  # one family per name, as on /metrics
            return None
        taken.update(samples)
        # The histogram translation adds le and every series gets __name__: an attribute must not repeat them.
        reserved = reserved_names(histogram=kind is Kind.HISTOGRAM)
        points = [replace(p, attributes=_labels(p.attributes, target, reserved)) for p in data.data_points]
        return replace(metric, name=name, unit="", data=replace(data, data_points=points))

    @staticmethod
    def _target_info(resource: Resource, target: Mapping[str, str]) -> Metric:
        attributes = {k: v for k, v in resource.attributes.items() if k not in _RESOURCE_LABELS}
        now = time.time_ns()
        point = NumberDataPoint(_labels(attributes, target, reserved_names()), now, now, 1)
        return Metric(TARGET_INFO, "Target metadata", "", Gauge([point]))

    # -- the stock exporter's histogram translation, corrected --------------------------------------------
    def _parse_histogram_data_point(self, data_point: Any, name: str) -> list[tuple[tuple[tuple[str, str], ...],
                                                                                     tuple[float, int]]]:
        base = list(data_point.attributes.items())
        name = self._sanitize_string(name, "name")
        timestamp = data_point.time_unix_nano // 1_000_000
        bounds: Sequence[float] = [*data_point.explicit_bounds, math.inf]
        out = []
        cumulative = 0
        for bound, count in zip(bounds, data_point.bucket_counts, strict=True):
            cumulative += count
            attrs = (*base, ("__name__", f"{name}_bucket"), (BUCKET_LABEL, format_float(float(bound))))
            out.append((attrs, (cumulative, timestamp)))
        out.append(((*base, ("__name__", f"{name}_sum")), (data_point.sum, timestamp)))
        out.append(((*base, ("__name__", f"{name}_count")), (data_point.count, timestamp)))
        return out


def remote_write_reader(endpoint: str, *, interval_s: float | None = None,
                        timeout_s: float = DEFAULT_EXPORT_TIMEOUT_S, headers: Mapping[str, str] | None = None,
                        basic_auth: Mapping[str, str] | None = None, tls_config: Mapping[str, Any] | None = None,
                        target_info: bool = True) -> PeriodicExportingMetricReader:
    """The stock ``PeriodicExportingMetricReader`` around a ``RemoteWriteExporter`` pushing to ``endpoint``
    (``http://prometheus:9090/api/v1/write`` for a Prometheus started with
    ``--web.enable-remote-write-receiver``; Mimir, Cortex, Thanos receive and VictoriaMetrics take the same
    requests). Every ``interval_s`` (None: OTEL_METRIC_EXPORT_INTERVAL, default 60 s); each POST gives up after
    ``timeout_s``. ``basic_auth`` is ``{"username": ..., "password": ...}`` (or ``password_file``);
    ``tls_config`` takes ``ca_file``, ``cert_file``/``key_file`` and ``insecure_skip_verify``.
    Pass it to ``telemetry.setup(metric_readers=[...])``; shutting the provider down sends a final export."""
    exporter = RemoteWriteExporter(endpoint, timeout_s=timeout_s, headers=headers, basic_auth=basic_auth,
                                   tls_config=tls_config, target_info=target_info)
    return periodic_reader(exporter, interval_s=interval_s, timeout_s=timeout_s)
