"""Property tests (hypothesis): any label value, quotes, backslashes, newlines and non-ASCII included, renders
to an exposition Prometheus' parser accepts, and reads back as the same value.

Two parsers: prometheus_client's (per example, fast) and promtool, i.e. Prometheus' own Go parser (a batch of
values per example)."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client.parser import text_string_to_metric_families

from telemetry.exposition.reader import PrometheusReader
from telemetry.exposition.render import render
from telemetry.registry import Registry

from .conftest import require_binary

COUNTER = "tuist_storage_multipart_complete_upload_count"  # labels object_key, upload_id
HISTOGRAM = "tuist_storage_multipart_complete_upload_duration_milliseconds"

# Any text without lone surrogates (which are not Unicode text and are rejected at labels()), biased towards
# the characters that need escaping.
tricky = st.sampled_from(['"', "\\", "\n", "\\n", '\\"', "ü", "東京", "🙂", "\r", "\t", "{", "}", "=", ",", " ", "#"])
label_value = st.lists(st.one_of(tricky, st.text(st.characters(exclude_categories=("Cs",)), min_size=1)),
                       min_size=1, max_size=6).map("".join)


def parsed_labels(text: str, sample_name: str) -> list[dict[str, str]]:
    # prometheus_client's parser reports a counter's samples as <name>_total whatever the text says.
    return [s.labels for f in text_string_to_metric_families(text) for s in f.samples
            if s.name in (sample_name, f"{sample_name}_total")]


@settings(max_examples=150, deadline=None)
@given(key=label_value, upload=label_value, amount=st.integers(min_value=0, max_value=10**15))
def test_counter_label_values_round_trip(key: str, upload: str, amount: int) -> None:
    registry = Registry()
    registry.counter(COUNTER).labels(key, upload).inc(amount)
    text = render(registry, None)
    text.encode("utf-8")  # always encodable
    [family] = [f for f in text_string_to_metric_families(text) if f.name == COUNTER]
    [sample] = family.samples
    assert sample.labels == {"object_key": key, "upload_id": upload}
    assert sample.value == amount


@settings(max_examples=80, deadline=None)
@given(key=label_value, values=st.lists(st.floats(min_value=0, max_value=1e12, allow_nan=False), min_size=1,
                                        max_size=8))
def test_histogram_label_values_and_counts_round_trip(key: str, values: list[float]) -> None:
    registry = Registry()
    child = registry.histogram(HISTOGRAM).labels(key, "u")
    for v in values:
        child.observe(v)
    text = render(registry, None)
    buckets = [s for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == f"{HISTOGRAM}_bucket"]
    assert all(s.labels["object_key"] == key for s in buckets)
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == len(values)
    counts = [s.value for s in buckets]
    assert counts == sorted(counts), "buckets are cumulative"
    [total] = [s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == f"{HISTOGRAM}_sum"]
    assert total == pytest.approx(sum(values), rel=1e-9)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keys=st.lists(label_value, min_size=1, max_size=40, unique=True))
def test_prometheus_go_parser_accepts_every_value(keys: list[str]) -> None:
    binary = require_binary("promtool")
    registry = Registry()
    for i, key in enumerate(keys):
        registry.counter(COUNTER).labels(key, f"u{i}").inc(i)
        registry.histogram(HISTOGRAM).labels(key, f"u{i}").observe(i)
    text = render(registry, None)
    result = subprocess.run([binary, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert result.returncode in (0, 3), result.stderr.decode()
    assert b"error while linting" not in result.stderr
    got = {s["object_key"] for s in parsed_labels(text, COUNTER)}
    assert got == set(keys)


@settings(max_examples=50, deadline=None)
@given(value=label_value, key=st.sampled_from(["a.b", "k", "with space", "ü"]))
def test_sdk_attribute_values_round_trip_too(value: str, key: str) -> None:
    reader = PrometheusReader(None, target_info=False)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    try:
        provider.get_meter("p").create_counter("c").add(1, {key: value})
        text = reader.scrape()
    finally:
        provider.shutdown()
    [labels] = parsed_labels(text, "c_total")
    assert list(labels.values()) == [value]


def test_lone_surrogates_are_rejected_when_recording_not_when_scraping() -> None:
    registry = Registry()
    kept = registry.counter(COUNTER).labels("ok", "u")
    kept.inc()
    with pytest.raises(ValueError, match=f"{COUNTER}: label object_key=.* is not valid Unicode text"):
        registry.counter(COUNTER).labels("bad\ud800", "u")
    render(registry, None).encode("utf-8")
    assert [c.labels for c in registry.counter(COUNTER).series()] == [("ok", "u")]
