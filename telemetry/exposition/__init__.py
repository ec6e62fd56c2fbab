"""Exposition: the text renderer, our OpenTelemetry MetricReader and the /metrics HTTP endpoint."""
