"""``telemetry.testing`` and its pytest fixtures: the parser agrees with prometheus_client's on every exposition
the package writes, the readers find exactly the samples asked for, ``isolated()`` leaves nothing running, and
``wait_for`` reports what it waited for."""

from __future__ import annotations

import itertools
import math
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import telemetry
from telemetry.exposition.reader import PrometheusReader
from telemetry.registry import Registry
from telemetry.setup import Telemetry
from telemetry.testing import (
    ExpositionSyntaxError,
    Sample,
    WaitTimeout,
    isolated,
    parse_exposition,
    sample_total,
    sample_value,
    wait_for,
)

GOLDEN = Path(__file__).parent / "golden" / "catalogue.prom"


def reference(text: str) -> list[tuple[str, dict[str, str], float]]:
    """prometheus_client's reading; its parser names a counter sample ``*_total`` even where the exposition does
    not (the catalogue's counters without the suffix keep their documented names), so that suffix is put back."""
    names = {s.name for s in parse_exposition(text)}
    return [(s.name if s.name in names else s.name.removesuffix("_total"), s.labels, s.value)
            for f in text_string_to_metric_families(text) for s in f.samples]


def ours(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, dict(s.labels), s.value) for s in parse_exposition(text)]


def test_parser_agrees_with_prometheus_client_on_the_whole_catalogue() -> None:
    text = GOLDEN.read_text(encoding="utf-8")
    assert len(parse_exposition(text)) > 600
    assert ours(text) == reference(text)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40), st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10**6, 10**6))
def test_parser_round_trips_what_the_registry_renders(label: str, number: float) -> None:
    registry = Registry()
    counter = registry.counter("tuist_storage_get_object_as_string_count")
    counter.labels(label).inc(abs(number))
    text = PrometheusReader(registry).scrape()
    [sample] = [s for s in parse_exposition(text) if s.name == "tuist_storage_get_object_as_string_count"]
    assert dict(sample.labels) == {counter.spec.labels[0]: label}
    assert sample.value == float(abs(number))
    assert ours(text) == reference(text)


def test_timestamps_exemplars_and_special_values() -> None:
    text = ('a_total{x="1"} 3 1700000000000\n'
            'b_bucket{le="+Inf"} 2 # {trace_id="0af7"} 0.5 1700000000.1\n'
            "c NaN\nd -Inf\n# EOF\n")
    a, b, c, d = parse_exposition(text)
    assert a == Sample("a_total", {"x": "1"}, 3.0, 1700000000000.0)
    assert (b.name, b.labels, b.value, b.timestamp) == ("b_bucket", {"le": "+Inf"}, 2.0, None)
    assert math.isnan(c.value) and d.value == -math.inf


@pytest.mark.parametrize(("line", "why"), [
    ("1abc 1", "expected a name at column 1"),
    ('a{b=c} 1', 'expected =" after label'),
    ('a{b="c} 1', "unterminated label value"),
    ('a{b="\\t"} 1', "bad escape"),
    ('a{b="1",b="2"} 1', "appears twice"),
    ('a{b="1" c="2"} 1', "expected , or }"),
    ("a", "expected a space before the value"),
    ("a 1 2 3", "expected a value and an optional timestamp"),
    ("a one", "could not convert"),
])
def test_malformed_lines_name_the_line_and_the_reason(line: str, why: str) -> None:
    with pytest.raises(ExpositionSyntaxError, match=f"^line 2: .*{why}"):
        parse_exposition("# TYPE a counter\n" + line + "\n")


def test_sample_value_matches_labels_exactly_and_total_sums_a_subset() -> None:
    text = ('runs{name="build",ci="true"} 2\nruns{name="build",ci="false"} 3\nruns{name="test",ci="true"} 5\n'
            "plain 7\n")
    assert sample_value(text, "runs", name="build", ci="false") == 3
    assert sample_value(text, "runs", name="build") is None, "a subset of the labels is not a match"
    assert sample_value(text, "plain") == 7
    assert sample_value(text, "missing") is None
    assert sample_total(text, "runs", name="build") == 5
    assert sample_total(text, "runs", ci="true") == 7
    assert sample_total(text, "runs") == 10
    assert sample_total(text, "missing") == 0


def test_isolated_is_what_the_code_under_test_sees_and_stops_after() -> None:
    with isolated(serve=True, runtime_metrics=False) as t:
        assert telemetry.current() is t and telemetry.setup() is t
        t.recorders.runs.record("build", is_ci=True, status=0, duration_ms=5.0)
        labels = dict(name="build", is_ci="true", status="0")
        assert sample_value(t, "tuist_runs_total", **labels) == 1
        assert t.metrics_url is not None and t.metrics_url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(t.metrics_url, timeout=5) as response:
            assert sample_value(response.read().decode(), "tuist_runs_total", **labels) == 1
        url = t.metrics_url
    assert telemetry.current() is None
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)
    with isolated(runtime_metrics=False) as fresh:
        assert sample_value(fresh, "tuist_runs_total", **labels) is None, "each block starts empty"


def test_the_pytest_plugin_fixtures(telemetry_instance: Telemetry, telemetry_registry: Registry) -> None:
    assert telemetry.current() is telemetry_instance and telemetry_instance.server is None
    assert telemetry_instance.registry is not telemetry_registry
    assert "tuist_runs_total" in telemetry_registry


def test_wait_for_returns_the_first_truthy_result() -> None:
    calls = itertools.count()
    assert wait_for(lambda: next(calls) >= 3 and "ready", interval=0.001) == "ready"


def test_wait_for_treats_ignored_errors_as_not_yet() -> None:
    done = threading.Event()
    threading.Timer(0.1, done.set).start()

    def check() -> bool:
        if not done.is_set():
            raise ConnectionRefusedError("still starting")
        return True

    assert wait_for(check, 5, ignore=(OSError,)) is True
    with pytest.raises(ZeroDivisionError):
        wait_for(lambda: 1 / 0, 5, ignore=(OSError,))


def test_wait_for_times_out_with_what_and_the_last_result() -> None:
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"timed out after 0.2 s waiting for the queue \(last result \[\]\)"):
        wait_for(list, 0.2, what="the queue")
    assert 0.2 <= time.monotonic() - started < 2
    with pytest.raises(AssertionError, match="last error ConnectionRefusedError"):
        wait_for(lambda: (_ for _ in ()).throw(ConnectionRefusedError()), 0.1, ignore=(OSError,))


# The receivers' waits block on a condition variable (no polling): they stay their own.
_OWN_WAITS = {"otlp_receiver.py", "posthog_capture.py"}


def _polling_loops(source: str) -> list[int]:
    """Lines of ``while`` loops whose condition reads the clock: a hand-written wait for a condition."""
    import ast

    return [node.lineno for node in ast.walk(ast.parse(source)) if isinstance(node, ast.While)
            and any((isinstance(n, ast.Attribute) and n.attr in ("monotonic", "time", "perf_counter"))
                    or (isinstance(n, ast.Name) and n.id == "deadline") for n in ast.walk(node.test))]


def test_the_suite_waits_with_wait_for() -> None:
    """The project's own tests use ``wait_for`` rather than their own deadline loops on the wall or monotonic
    clock (test_runtime's loop burning CPU until a ``process_time`` is no wait)."""
    tests = Path(__file__).resolve().parent
    found = [f"{p.name}:{line}" for p in sorted(tests.rglob("*.py")) if p.name not in _OWN_WAITS
             and "node_modules" not in p.parts for line in _polling_loops(p.read_text())]
    assert found == [], found
    assert _polling_loops("while time.monotonic() < deadline:\n    pass\n") == [1]  # the scan finds one
