"""Tracing and error reporting: a TracerProvider, OTLP/HTTP span export, and Sentry when a DSN is given.

``setup_tracing()`` creates an SDK ``TracerProvider`` with an OTLP/HTTP exporter only when the standard
variables ask for one: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, and
``OTEL_TRACES_EXPORTER`` not ``none``; the exporter reads its headers, timeout and compression from the same
variables. With no exporter there is no provider at all: spans cost more than everything else on a request's
path (bench/bench_service.py: about 250 µs of CPU per request with ASGI server spans exported, a few µs for the
request metrics), so when nobody receives them the instrumentation leaves them off and log lines carry no trace
ids. Sentry (``sentry-sdk``, the ``sentry``
extra) is initialised only when the caller passes a DSN.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from telemetry.config import Settings, redact

_log = logging.getLogger(__name__)


def otlp_traces_endpoint(environ: Mapping[str, str] | None = None, *, settings: Settings | None = None) -> str | None:
    """Where spans go under the standard variables, or None when trace export is off. The variables come from
    ``settings``, else from ``Settings.from_env(environ)`` (``environ`` None: the process environment)."""
    s = settings if settings is not None else Settings.from_env(environ)
    if "none" in [e.strip() for e in s.traces_exporter.split(",")]:
        return None
    if s.otlp_traces_endpoint:
        return s.otlp_traces_endpoint
    return f"{s.otlp_endpoint.rstrip('/')}/v1/traces" if s.otlp_endpoint else None


@dataclass
class Tracing:
    """What ``setup_tracing()`` started."""

    provider: TracerProvider | None
    endpoint: str | None = None
    sentry: bool = False

    def tracer(self, name: str) -> trace.Tracer:
        return (self.provider or trace.NoOpTracerProvider()).get_tracer(name)

    def force_flush(self, timeout_millis: int = 5_000) -> bool:
        return self.provider.force_flush(timeout_millis) if self.provider else True

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()
        if self.sentry:
            import sentry_sdk

            client = sentry_sdk.get_client()
            client.close(timeout=2)


def setup_tracing(*, service_name: str = "", service_version: str = "", sentry_dsn: str = "",
                  sentry_environment: str = "", disabled: bool = False, set_global: bool = True,
                  exporter: SpanExporter | None = None, environ: Mapping[str, str] | None = None,
                  settings: Settings | None = None) -> Tracing:
    """Create the TracerProvider when spans are exported over OTLP/HTTP; start Sentry when ``sentry_dsn``.

    Returns ``Tracing(provider=None)`` when no exporter is configured, or when ``disabled``
    (OTEL_SDK_DISABLED): the global no-op provider stays in place. ``set_global`` makes the provider
    the process-wide one (once per process, an OpenTelemetry rule); tests pass ``False`` and hand the provider
    to the instrumentation themselves. ``exporter`` overrides the OTLP exporter (tests). The endpoint comes from
    ``settings`` (``telemetry.current().settings``), else from ``environ`` (see ``otlp_traces_endpoint``).
    """
    sentry = _start_sentry(sentry_dsn, sentry_environment, service_version) if sentry_dsn else False
    endpoint = otlp_traces_endpoint(environ, settings=settings)
    if disabled or (exporter is None and endpoint is None):
        _log.info("tracing: off (no OTLP traces endpoint)%s", "; Sentry error reporting on" if sentry else "")
        return Tracing(None, None, sentry)
    attributes: dict[str, str] = {}
    if service_name:
        attributes[SERVICE_NAME] = service_name
    if service_version:
        attributes[SERVICE_VERSION] = service_version
    provider = TracerProvider(resource=Resource.create(attributes))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint)
    # Short delays so a span reaches the collector about a second after its request ends.
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1_000))
    if set_global:
        trace.set_tracer_provider(provider)
    _log.info("tracing: exporting spans to %s%s", redact(endpoint) if endpoint else type(exporter).__name__,
              "; Sentry error reporting on" if sentry else "")
    return Tracing(provider, endpoint, sentry)


def _start_sentry(dsn: str, environment: str, release: str) -> bool:
    import sentry_sdk
    from sentry_sdk.integrations.logging import LoggingIntegration

    options: dict[str, Any] = {"dsn": dsn, "send_default_pii": False,
                               # Errors only: OpenTelemetry carries the traces. Automatic framework
                               # integrations stay off and error log lines (5xx access lines among them) are
                               # breadcrumbs, not events: the service reports each unhandled error once, with
                               # capture_exception().
                               "traces_sample_rate": None, "auto_enabling_integrations": False,
                               "integrations": [LoggingIntegration(level=logging.INFO, event_level=None)]}
    if environment:
        options["environment"] = environment
    if release:
        options["release"] = release
    sentry_sdk.init(**options)
    return True


def capture_exception(exc: BaseException) -> None:
    """Record ``exc`` on the current span and send it to Sentry when Sentry is on."""
    span = trace.get_current_span()
    if span.is_recording():
        span.record_exception(exc)
        span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
    try:
        import sentry_sdk
    except ImportError:
        return
    if sentry_sdk.is_initialized():
        sentry_sdk.capture_exception(exc)
