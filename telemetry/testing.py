"""Helpers for a service's own tests: an isolated telemetry instance, read one sample's value, parse an
exposition, wait for a condition.

    from telemetry.testing import isolated, sample_value

    def test_build_is_counted() -> None:
        with isolated() as t:
            run_the_build_endpoint()                     # code that calls telemetry.current() / setup()
            assert sample_value(t, "tuist_runs_total", name="build", is_ci="true", status="0") == 1

The pytest fixtures ``telemetry_instance`` and ``telemetry_registry`` come with
``pytest_plugins = ["telemetry.pytest_plugin"]`` in a ``conftest.py``. Nothing here imports pytest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from telemetry.registry import Registry
from telemetry.setup import Telemetry, setup, shutdown

__all__ = [
    "ExpositionSyntaxError",
    "Sample",
    "WaitTimeout",
    "isolated",
    "parse_exposition",
    "sample_total",
    "sample_value",
    "wait_for",
]

T = TypeVar("T")


class Scrapes(Protocol):
    """Anything that renders an exposition: ``Telemetry``, ``PrometheusReader``."""

    def scrape(self) -> str: ...


Source = str | Scrapes


@dataclass(frozen=True)
class Sample:
    """One sample line: ``name{labels} value [timestamp]`` (an OpenMetrics exemplar after it is skipped)."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    value: float = 0.0
    timestamp: float | None = None


class ExpositionSyntaxError(ValueError):
    """A line of an exposition that the Prometheus text format does not allow; says which line and why."""


class WaitTimeout(AssertionError):
    """``wait_for`` ran out of time; an ``AssertionError`` so a test reports it as a failure, not an error."""


@contextmanager
def isolated(*, serve: bool = False, **overrides: Any) -> Iterator[Telemetry]:
    """A fresh ``setup()`` for the duration of the block, with its own ``Registry``, and ``shutdown()`` after.

    Code under test that calls ``telemetry.setup()`` or ``telemetry.current()`` gets this instance. Any instance
    already running is shut down first. ``serve=True`` starts ``/metrics`` on a free loopback port
    (``t.metrics_url``); ``overrides`` are ``Settings`` fields, as for ``setup()`` (``runtime_metrics=False``, ...).
    OpenTelemetry lets a process install its global MeterProvider once: instrumentation that reads the global
    provider reports to the first instance a process set up, not to later isolated ones.
    """
    overrides.setdefault("metrics_host", "127.0.0.1")
    overrides.setdefault("metrics_port", 0)
    shutdown()
    instance = setup(registry=Registry(), serve=serve, **overrides)
    try:
        yield instance
    finally:
        shutdown()


def parse_exposition(text: str) -> list[Sample]:
    """Every sample of a Prometheus text or OpenMetrics exposition, in order; label values unescaped.
    Raises ``ExpositionSyntaxError`` naming the line for anything the format does not allow."""
    samples = []
    for number, line in enumerate(text.split("\n"), 1):  # only \n ends a line (a value may hold \r)
        if not line or line.startswith("#"):
            continue
        try:
            samples.append(_parse_line(line))
        except ValueError as exc:
            raise ExpositionSyntaxError(f"line {number}: {exc}: {line[:200]!r}") from None
    return samples


def sample_value(source: Source, metric: str, /, **labels: str) -> float | None:
    """The value of the sample named ``metric`` whose labels are exactly ``labels``, or None when there is
    none (as prometheus_client's ``get_sample_value``). ``source`` is exposition text or anything with
    ``scrape()``."""
    for sample in parse_exposition(_text(source)):
        if sample.name == metric and sample.labels == labels:
            return sample.value
    return None


def sample_total(source: Source, metric: str, /, **labels: str) -> float:
    """The sum over the samples named ``metric`` whose labels include ``labels`` (0 when none does): a counter
    across the labels not named, or across the worker processes of a multi-process exposition."""
    return math.fsum(s.value for s in parse_exposition(_text(source))
                     if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items()))


def wait_for(check: Callable[[], T], timeout: float = 10.0, *, interval: float = 0.05, what: str = "",
             ignore: tuple[type[BaseException], ...] = ()) -> T:
    """Call ``check()`` until it returns something truthy and return that; exceptions of the ``ignore`` types
    count as "not yet" (``OSError`` for a server still starting). Raises ``WaitTimeout`` after ``timeout``
    seconds, with the last result or error."""
    deadline = time.monotonic() + timeout
    while True:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = check()
            if result:
                return result
        except ignore as exc:
            error = exc
        if time.monotonic() >= deadline:
            last = f"last error {error!r}" if error is not None else f"last result {result!r}"
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what or _name(check)} ({last})")
        time.sleep(interval)


def _text(source: Source) -> str:
    return source if isinstance(source, str) else source.scrape()


def _name(check: Callable[..., Any]) -> str:
    return getattr(check, "__qualname__", None) or repr(check)


_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789")
_NAME_CHARS = _LABEL_CHARS | {":"}
_DIGITS = frozenset("0123456789")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


def _name_end(line: str, start: int, chars: frozenset[str]) -> int:
    """Where the metric or label name at ``start`` ends (a name does not start with a digit)."""
    end = start
    while end < len(line) and line[end] in chars:
        end += 1
    if end == start or line[start] in _DIGITS:
        raise ValueError(f"expected a name at column {start + 1}")
    return end


def _parse_line(line: str) -> Sample:
    end = _name_end(line, 0, _NAME_CHARS)
    name, pos = line[:end], end
    labels: dict[str, str] = {}
    if pos < len(line) and line[pos] == "{":
        labels, pos = _parse_labels(line, pos + 1)
    if pos >= len(line) or line[pos] != " ":
        raise ValueError(f"expected a space before the value at column {pos + 1}")
    fields = line[pos + 1:].split(" # ", 1)[0].split()  # an OpenMetrics exemplar follows " # "
    if not 1 <= len(fields) <= 2:
        raise ValueError("expected a value and an optional timestamp")
    timestamp = float(fields[1]) if len(fields) == 2 else None
    return Sample(name, labels, float(fields[0]), timestamp)


def _parse_labels(line: str, pos: int) -> tuple[dict[str, str], int]:
    labels: dict[str, str] = {}
    while True:
        if pos < len(line) and line[pos] == "}":
            return labels, pos + 1
        label_end = _name_end(line, pos, _LABEL_CHARS)
        label = line[pos:label_end]
        if line[label_end:label_end + 2] != '="':
            raise ValueError(f'expected =" after label {label!r}')
        value, pos = _parse_quoted(line, label_end + 2)
        if label in labels:
            raise ValueError(f"label {label!r} appears twice")
        labels[label] = value
        if pos < len(line) and line[pos] == ",":
            pos += 1
        elif pos >= len(line) or line[pos] != "}":
            raise ValueError(f"expected , or }} after label {label!r}")


def _parse_quoted(line: str, pos: int) -> tuple[str, int]:
    out: list[str] = []
    while pos < len(line):
        char = line[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\":
            escaped = _ESCAPES.get(line[pos + 1:pos + 2])
            if escaped is None:
                raise ValueError(f"bad escape at column {pos + 1}")
            out.append(escaped)
            pos += 2
        else:
            out.append(char)
            pos += 1
    raise ValueError("unterminated label value")
