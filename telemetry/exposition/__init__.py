"""Exposition: the text renderer, our OpenTelemetry MetricReader, the /metrics HTTP endpoint and the mountable
ASGI and WSGI apps (``from telemetry.exposition import metrics_asgi_app``)."""

from telemetry.exposition.app import metrics_asgi_app, metrics_wsgi_app

__all__ = ["metrics_asgi_app", "metrics_wsgi_app"]
