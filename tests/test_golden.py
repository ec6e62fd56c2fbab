"""Golden files: the exact bytes of the exposition for the whole catalogue, and for SDK metrics beside it.

The registry is filled deterministically (one label set per family, fixed values) so any change to names,
types, help text, label order, escaping, bucket layout or number formatting shows up as a diff. After an
intended change, regenerate with ``UPDATE_GOLDEN=1 pytest tests/test_golden.py`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource

from telemetry.catalogue import CATALOGUE, Kind, MetricSpec
from telemetry.exposition.reader import PrometheusReader
from telemetry.exposition.render import render
from telemetry.registry import Registry

GOLDEN = Path(__file__).parent / "golden"


def label_values(s: MetricSpec, variant: int) -> tuple[str, ...]:
    """A valid label set: the allowed values where the doc fixes them, readable placeholders elsewhere."""
    out = []
    for name in s.labels:
        allowed = sorted(s.allowed.get(name, ()))
        out.append(allowed[variant % len(allowed)] if allowed else f"{name}-{variant}")
    return tuple(out)


def fill(registry: Registry) -> None:
    """Two label sets per labelled family (one for label-less ones), values that exercise the formatting."""
    for s in CATALOGUE:
        if s.name == "tuist_telemetry_overflow_measurements_total":
            continue
        variants = (0, 1) if s.labels else (0,)
        for v in variants:
            labels = label_values(s, v)
            if s.kind is Kind.COUNTER:
                registry.counter(s.name).labels(*labels).inc(3 + v)
                if v:
                    registry.counter(s.name).labels(*labels).inc(0.25)
            elif s.kind is Kind.GAUGE:
                registry.gauge(s.name).labels(*labels).set(7 if v == 0 else 2.5)
            else:
                h = registry.histogram(s.name).labels(*labels)
                # The first bound exactly, one in the middle, and one above the last bound.
                for value in (s.buckets[0], s.buckets[len(s.buckets) // 2] * 0.9, s.buckets[-1] * 2):
                    h.observe(value)
    # Label values that need escaping, and non-ASCII.
    registry.counter("tuist_storage_get_object_as_string_count").labels('dir/"quoted"\\back\nline ü').inc()


def check(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{name} changed; rerun with UPDATE_GOLDEN=1 if intended and review the diff"


def test_catalogue_exposition_matches_golden_file() -> None:
    registry = Registry()
    fill(registry)
    text = render(registry, None)
    check("catalogue.prom", text)
    # Every family is present, in catalogue order, exactly once.
    types = [line.split(" ")[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert types == [s.name for s in CATALOGUE]


def test_empty_registry_exposition_matches_golden_file() -> None:
    """Before anything is recorded: every family's HELP/TYPE, label-less counters at 0, nothing else."""
    check("catalogue_empty.prom", render(Registry(), None))


def test_sdk_metrics_beside_the_catalogue_match_golden_file() -> None:
    registry = Registry()
    registry.counter("tuist_cache_uploads_total").labels().inc(2)
    reader = PrometheusReader(registry)
    provider = MeterProvider(resource=Resource({"service.name": "golden", "service.version": "1.2.3"}),
                             metric_readers=[reader], shutdown_on_exit=False)
    try:
        meter = provider.get_meter("golden.scope", "0.1")
        meter.create_counter("app.jobs", unit="{job}", description="Jobs run.").add(3, {"queue": "default"})
        meter.create_up_down_counter("db.client.connections.usage", unit="{connection}",
                                     description="Connections by state.").add(2, {"state": "idle"})
        h = meter.create_histogram("http.client.duration", unit="ms", description="Outbound request duration.")
        for v in (3, 40, 40, 12_000):
            h.record(v, {"http.method": "GET", "net.peer.name": "example.com"})
        meter.create_gauge("queue.depth", unit="1", description='Depth "now"\nsecond line.').set(0.5)
        text = reader.scrape()
    finally:
        provider.shutdown()
    check("with_sdk_metrics.prom", text)


@pytest.mark.parametrize("name", ["catalogue.prom", "catalogue_empty.prom", "with_sdk_metrics.prom"])
def test_golden_files_are_utf8_text_format(name: str) -> None:
    text = (GOLDEN / name).read_text(encoding="utf-8")
    assert text.endswith("\n") and "\r" not in text and "\t" not in text
