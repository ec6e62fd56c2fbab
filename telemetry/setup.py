"""``setup()`` and ``shutdown()``: the MeterProvider with the catalogue's instruments and Views, its resource,
our Prometheus reader and the ``/metrics`` endpoint, the user's extra readers and Views, runtime metrics and,
when ``OTEL_METRICS_EXPORTER`` names otlp, the stock OTLP reader and exporter. Idempotent."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.metrics.view import DropAggregation, ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, SERVICE_VERSION, Resource

from telemetry import views as catalogue_views
from telemetry.bridge import CatalogueMeterProvider
from telemetry.catalogue import CATALOGUE, SCOPE_NAME, MetricSpec
from telemetry.config import ENV, Settings, SettingsError
from telemetry.export import otlp_reader, otlp_timeout_s, shutdown_at_exit, shutdown_provider
from telemetry.exposition.reader import PrometheusReader
from telemetry.exposition.server import MetricsServer
from telemetry.recorders import Recorders
from telemetry.registry import Registry, default_registry

if TYPE_CHECKING:
    from telemetry.workers import ProcessMode
from telemetry.store import StreamShape

_log = logging.getLogger(__name__)

# Bucket boundaries for the instrumentation libraries' own histograms (their names are theirs).
_CLIENT_VIEWS = (
    View(instrument_name="http.client.duration", aggregation=ExplicitBucketHistogramAggregation(
        (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000))),
)
_SERVER_VIEWS = (
    View(instrument_name="http.server.duration", aggregation=ExplicitBucketHistogramAggregation(
        (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000))),
)
# The semantic conventions' HTTP server instruments (old and stable names), which FastAPI itself and the
# OpenTelemetry ASGI/WSGI/Flask/Django instrumentations record for the requests the package's middleware counts
# as http_requests_total / http_request_duration_seconds: dropped unless TUIST_METRICS_HTTP_SERVER_METRICS.
HTTP_SERVER_INSTRUMENTS = "http.server.*"
_DROP_SERVER_VIEWS = (View(instrument_name=HTTP_SERVER_INSTRUMENTS, aggregation=DropAggregation()),)


@dataclass
class Telemetry:
    """What ``setup()`` started. ``meter_provider`` is None when OTEL_SDK_DISABLED is set."""

    settings: Settings
    registry: Registry
    recorders: Recorders
    meter_provider: CatalogueMeterProvider | None = None
    reader: PrometheusReader | None = None
    server: MetricsServer | None = None
    _closers: list[Any] = field(default_factory=list)

    @property
    def metrics_url(self) -> str | None:
        return self.server.url if self.server else None

    def scrape(self) -> str:
        """The exposition as the endpoint would serve it (empty when disabled)."""
        return self.reader.scrape() if self.reader else ""

    def shutdown(self) -> None:
        if self.server:
            self.server.stop()
        for close in reversed(self._closers):
            try:
                close()
            except Exception:
                _log.exception("telemetry shutdown step failed")
        if self.meter_provider:
            shutdown_provider(self.meter_provider, self.settings.shutdown_timeout)


_current: Telemetry | None = None
_lock = threading.Lock()


def setup(settings: Settings | None = None, *, registry: Registry | None = None, serve: bool = True,
          set_global: bool = True, metric_readers: Sequence[MetricReader] = (), views: Sequence[View] = (),
          **overrides: Any) -> Telemetry:
    """Start telemetry once per process; later calls return the running instance.

    ``overrides`` are ``Settings`` fields (``metrics_port=0``, ``service_name="api"``, ...) and win over
    environment variables. ``serve=False`` skips the HTTP endpoint (``Telemetry.scrape()`` still renders).
    ``metric_readers`` are added to the MeterProvider beside ours (an OTLP or console exporter's reader,
    ``InMemoryMetricReader``): each sees every catalogue metric. ``views`` are OpenTelemetry Views; those that
    select a catalogue instrument (by instrument or documented name) shape its stream: drop labels, rename,
    change buckets, drop it. A View that cannot apply raises ``ValueError``.
    ``set_global`` installs the MeterProvider as OpenTelemetry's global one, so instrumentation libraries
    that use the global report to /metrics; OpenTelemetry allows that once per process, so only the first
    ``setup()`` of a process does it, and not when another one is installed already (``opentelemetry-instrument``
    does that first): then one line is logged, and /metrics is the same since the catalogue never depends on the
    global. ``http_server_metrics`` (``TUIST_METRICS_HTTP_SERVER_METRICS``) keeps the ``http.server.*`` metrics
    frameworks record beside ``http_requests_total``; by default they are dropped, so no request counts twice.
    Raises ``SettingsError`` for a bad setting and ``ExpositionError`` when the port is taken.
    """
    global _current
    with _lock:
        if _current is not None:
            if settings is not None or overrides:
                _log.info("telemetry is already set up; setup() arguments ignored (call shutdown() first)")
            return _current
        settings = settings.replace(**overrides) if settings else Settings.from_env(**overrides)
        registry = registry or default_registry()
        mode = _multiprocess(settings, registry) if settings.multiprocess_dir and not settings.sdk_disabled else None
        try:
            registry.configure(stream_shapes(views, settings.drop_labels), cells=mode.file.cells if mode else None)
        except BaseException:
            if mode is not None:
                mode.close()
            raise
        registry.set_limits(settings.cardinality_limit, settings.cardinality_limits)
        registry.set_label_limits(settings.label_value_max_length, settings.label_bytes_per_series)
        recorders = Recorders(registry, gauge_refresh_seconds=settings.gauge_refresh_seconds)
        if settings.sdk_disabled:
            _log.info("OTEL_SDK_DISABLED is set: no metrics endpoint, nothing exported")
            _current = Telemetry(settings, registry, recorders)
            return _current
        _current = _start(settings, registry, recorders, serve, metric_readers, views, mode)
        if set_global and _current.meter_provider is not None:
            _install_global(_current.meter_provider)
        return _current


def drop_label_views(labels: str | Iterable[str], catalogue: Iterable[MetricSpec] = CATALOGUE) -> list[View]:
    """The Views ``TUIST_METRICS_DROP_LABELS`` stands for: one per catalogue instrument that has any of
    ``labels`` (comma-separated text or names), keeping the instrument's other labels."""
    dropped = _label_set(labels)
    return [View(instrument_name=s.instrument, meter_name=SCOPE_NAME,
                 attribute_keys={n for n in s.labels if n not in dropped})
            for s in catalogue if dropped.intersection(s.labels)]


def stream_shapes(views: Sequence[View], drop_labels: str | Iterable[str] = "") -> dict[str, tuple[StreamShape, ...]]:
    """What the registry's streams look like: the user's Views, then the labels ``drop_labels`` names dropped
    from every catalogue metric that has them. A metric no user View selects gets a View from
    ``drop_label_views``; the streams a user View shapes lose those labels too (an extra View beside the user's
    would add a second stream, and bring back a metric the user dropped)."""
    shapes = catalogue_views.resolve(views)
    dropped = _label_set(drop_labels)
    if not dropped:
        return shapes
    for name, streams in shapes.items():
        shapes[name] = tuple(dataclasses.replace(s, labels=tuple(n for n in s.labels if n not in dropped))
                             for s in streams)
    unshaped = [s for s in CATALOGUE if s.name not in shapes]
    shapes.update(catalogue_views.resolve(drop_label_views(dropped, unshaped)))
    return shapes


def _label_set(labels: str | Iterable[str]) -> frozenset[str]:
    names = labels.split(",") if isinstance(labels, str) else labels
    return frozenset(n.strip() for n in names if n.strip())


def _multiprocess(settings: Settings, registry: Registry) -> ProcessMode:
    from telemetry.multiprocess import MultiprocessError
    from telemetry.workers import ProcessMode

    try:
        return ProcessMode(settings.multiprocess_dir, registry, settings.multiprocess_refresh_seconds)
    except MultiprocessError as exc:
        raise SettingsError(f"{ENV['multiprocess_dir']}: {exc}") from None


def _start(settings: Settings, registry: Registry, recorders: Recorders, serve: bool,
           extra_readers: Sequence[MetricReader], views: Sequence[View], mode: ProcessMode | None) -> Telemetry:
    resource = _resource(settings)
    reader = PrometheusReader(registry, target_info=settings.target_info, scope_labels=settings.scope_labels,
                              multiprocess=mode)
    readers: list[MetricReader] = [reader, *extra_readers]
    otlp = _otlp_reader(settings)
    if otlp is not None:
        readers.append(otlp)
    # The SDK's own exit handler would wait without bound for exporters whose receiver is down.
    server_views = _SERVER_VIEWS if settings.http_server_metrics else _DROP_SERVER_VIEWS
    provider = CatalogueMeterProvider.build(registry, readers, views=(*_CLIENT_VIEWS, *server_views),
                                            user_views=views, resource=resource, shutdown_on_exit=False,
                                            exemplar_filter=settings.metrics_exemplar_filter)
    telemetry = Telemetry(settings, registry, recorders, provider, reader)
    telemetry._closers.append(shutdown_at_exit(provider, settings.shutdown_timeout))
    if mode is not None:
        telemetry._closers.insert(0, mode.close)  # runs last: the final gauge values, then the file released
    try:
        if settings.runtime_metrics:
            from telemetry.instrumentation.runtime import RuntimeMetrics

            RuntimeMetrics(provider.get_meter("telemetry.runtime"),
                           service_name=str(resource.attributes.get(SERVICE_NAME, "")),
                           service_version=settings.service_version, git_sha=settings.git_sha)
        if mode is not None:
            mode.start(reader.own_text)
        if serve:
            # In multi-process mode every worker may listen on the port (SO_REUSEPORT) and answers with the
            # merged view, so no worker fails to start because another took the port.
            telemetry.server = MetricsServer.from_settings(settings, reader.scrape, shared=mode is not None)
    except BaseException:
        telemetry.shutdown()
        raise
    return telemetry


def _resource(settings: Settings) -> Resource:
    # Resource.create merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME itself; pass only what an
    # argument set, so argument > environment > default holds.
    attributes: dict[str, str] = {SERVICE_INSTANCE_ID: f"{os.uname().nodename}:{os.getpid()}"}
    if settings.service_name:
        attributes[SERVICE_NAME] = settings.service_name
    if settings.service_version:
        attributes[SERVICE_VERSION] = settings.service_version
    return Resource.create(attributes)


def _otlp_reader(settings: Settings) -> MetricReader | None:
    """The stock periodic reader and OTLP/HTTP exporter when OTEL_METRICS_EXPORTER names otlp (needs the
    ``otlp`` extra), configured by the standard OTEL_EXPORTER_OTLP_* and OTEL_METRIC_EXPORT_* variables; an
    export gives up after its timeout (2 s unless OTEL_EXPORTER_OTLP_[METRICS_]TIMEOUT says otherwise)."""
    if "otlp" not in [name.strip() for name in settings.metrics_exporter.split(",")]:
        return None
    return otlp_reader(otlp_timeout_s(settings=settings))


_global_installed = False


def _install_global(provider: CatalogueMeterProvider) -> None:
    """Make ``provider`` OpenTelemetry's global MeterProvider, unless one is set already.

    OpenTelemetry allows the global once per process; ``opentelemetry-instrument`` (the distro) sets its own
    before the application starts. The catalogue does not need the global: its instruments and our reader are
    on ``provider``, so /metrics serves every ``tuist_*`` family either way. Then the only difference is where
    other code's ``opentelemetry.metrics.get_meter()`` instruments go, which one line says."""
    global _global_installed
    if _global_installed:
        return
    from opentelemetry import metrics

    from telemetry import _sdk

    existing = _sdk.global_meter_provider()
    if existing is None:
        metrics.set_meter_provider(provider)
    else:
        # A warning, not info: what other code records through opentelemetry.metrics.get_meter() (documented
        # names included) goes elsewhere than /metrics, and nothing else would say so.
        _log.warning("OpenTelemetry's global MeterProvider was already set (%s.%s, e.g. by "
                     "opentelemetry-instrument); telemetry keeps its own MeterProvider, whose readers and /metrics "
                     "serve every tuist_* metric; instruments from opentelemetry.metrics.get_meter() report to the "
                     "global one and its exporters, not to /metrics (pass meter_provider=telemetry.current()"
                     ".meter_provider to an instrumentation to bring its metrics to /metrics)",
                     type(existing).__module__, type(existing).__qualname__)
    _global_installed = True


def current() -> Telemetry | None:
    """The running instance, if ``setup()`` was called."""
    return _current


def shutdown() -> None:
    """Stop the endpoint and the provider; ``setup()`` may be called again afterwards."""
    global _current
    with _lock:
        if _current is not None:
            try:
                _current.shutdown()
            finally:  # a failing step must not leave a stopped instance that setup() would hand out again
                _current = None
