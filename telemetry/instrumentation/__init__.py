"""Instrumentation glue: runtime metrics here; httpx, SQLAlchemy and ASGI behind their extras."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace


def tracing_configured(tracer_provider: Any) -> bool:
    """Whether spans would go anywhere: a provider was passed, or a real one is installed globally. The
    upstream span instrumentations cost far more than our metrics, so they are attached only then."""
    if tracer_provider is not None:
        return True
    provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))
