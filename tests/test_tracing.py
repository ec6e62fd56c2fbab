"""Tracing: which standard variables turn OTLP/HTTP export on, and the service's spans end to end — exported
to an OTLP/HTTP endpoint started here, decoded with opentelemetry-proto — with the same trace ids in the logs."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from telemetry.testing import wait_for
from telemetry.tracing import capture_exception, otlp_traces_endpoint, setup_tracing
from tests.service_process import RecordingServer, ServiceProcess, issue_token


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, "http://127.0.0.1:4318/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/"}, "http://127.0.0.1:4318/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
      "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.2:4318/traces"}, "http://127.0.0.2:4318/traces"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"}, None),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "otlp"},
     "http://127.0.0.1:4318/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, None),
])
def test_otlp_endpoint_from_the_standard_variables(env: dict[str, str], expected: str | None) -> None:
    assert otlp_traces_endpoint(env) == expected


def test_no_endpoint_means_no_provider_and_no_sentry_without_a_dsn() -> None:
    tracing = setup_tracing(service_name="t", set_global=False, environ={})
    assert tracing.provider is None and tracing.endpoint is None and tracing.sentry is False
    with tracing.tracer("t").start_as_current_span("work") as span:
        assert not span.get_span_context().is_valid
    with RecordingServer() as collector:
        on = setup_tracing(service_name="t", set_global=False,
                           environ={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url + "/"})
        try:
            assert on.provider is not None and on.endpoint == f"{collector.url}/v1/traces"
            with on.tracer("t").start_as_current_span("work") as span:
                assert span.get_span_context().is_valid
            assert on.force_flush()
        finally:
            on.shutdown()
        assert [s[0] for s in decode_spans(collector)] == ["work"]
    disabled = setup_tracing(disabled=True, set_global=False)
    assert disabled.provider is None
    with disabled.tracer("t").start_as_current_span("work") as span:
        assert not span.get_span_context().is_valid


def test_capture_exception_marks_the_span() -> None:
    exporter = InMemorySpanExporter()
    tracing = setup_tracing(set_global=False, exporter=exporter, environ={})
    try:
        with tracing.tracer("t").start_as_current_span("failing"):
            capture_exception(ValueError("bad"))
        assert tracing.force_flush()
        [span] = exporter.get_finished_spans()
        assert span.status.status_code.name == "ERROR"
        assert [e.name for e in span.events] == ["exception"]
        assert span.events[0].attributes["exception.type"] == "ValueError"  # type: ignore[index]
    finally:
        tracing.shutdown()


def decode_spans(collector: RecordingServer) -> list[tuple[str, str, str, str, int, dict[str, object]]]:
    """(name, trace_id, span_id, parent_span_id, kind, attributes) of every span the collector received."""
    out = []
    for _path, headers, body in collector.received("/v1/traces"):
        if headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}
                    out.append((span.name, span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(),
                                span.kind, attributes))
    return out


@pytest.mark.slow
def test_service_spans_reach_an_otlp_endpoint_with_the_log_lines_trace_ids(tmp_path: Path) -> None:
    with RecordingServer() as collector, ServiceProcess(
            tmp_path, traffic=False, env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}) as service:
        service.wait_ready()
        token = issue_token(service)
        api = httpx.Client(base_url=service.url, headers={"authorization": f"Bearer {token}"})
        digest = "ef" * 20
        base = f"/api/projects/acme/ios-app/cache/{digest}/multipart"
        upload_id = api.post(f"{base}/start").json()["upload_id"]
        url = api.post(f"{base}/part", json={"upload_id": upload_id, "part_number": 1}).json()["url"]
        httpx.put(url, content=b"a" * 100)
        api.post(f"{base}/complete", json={"upload_id": upload_id, "parts": [1]})
        download = api.get(f"/api/projects/acme/ios-app/cache/{digest}", headers={"x-request-id": "trace-me"})
        assert download.status_code == 200 and download.content == b"a" * 100

        route = "GET /api/projects/{account}/{project}/cache/{hash}"
        def with_server_span() -> list[Any]:
            spans = decode_spans(collector)
            return spans if any(s[0] == route for s in spans) else []

        spans = wait_for(with_server_span, 15, interval=0.3, what=f"the span {route}")
        [server] = [s for s in spans if s[0] == route]
        trace_id = server[1]
        in_trace = [s for s in spans if s[1] == trace_id]
        names = {s[0] for s in in_trace}
        # the inbound request, its database statements, the presigned fetch (client) and the store serving it
        assert server[5]["http.route"] == "/api/projects/{account}/{project}/cache/{hash}"
        assert server[4] == 2  # SPAN_KIND_SERVER
        clients = [s for s in in_trace if s[4] == 3 and s[0] == "GET"]  # SPAN_KIND_CLIENT: httpx
        assert clients, names
        store = [s for s in in_trace if s[0] == "GET /_store/{key}"]
        assert store and store[0][3] == clients[0][2]  # the store's server span is the httpx span's child
        assert any(s[0].startswith("SELECT") for s in in_trace), names  # SQLAlchemy statement spans
        assert all(s[0] != "GET" or s[4] == 3 for s in in_trace)
        # no raw paths in span names
        assert not any(digest in s[0] for s in spans)

        access = service.access_line("trace-me")
        assert access["trace_id"] == trace_id
        assert access["span_id"] == server[2]
        assert access["route"] == "/api/projects/{account}/{project}/cache/{hash}" and access["user_id"] == 1
