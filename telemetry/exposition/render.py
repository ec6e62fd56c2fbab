"""Prometheus text format 0.0.4, written by hand.

Catalogue streams are rendered from the store's snapshot under their exact names and documented types (no
``_total`` or unit suffix added); label escaping and the label text of each series are the renderer's, cached
per series. Everything else the OpenTelemetry SDK collected (runtime, instrumentation libraries) is rendered
with the standard OpenTelemetry-to-Prometheus naming: sanitised name, unit suffix, ``_total`` on monotonic
sums. Each series carries exactly its own labels: nothing is unioned or back-filled.

One family per name, always: a metric whose sample names another family already uses (a catalogue name
recorded through another scope, two scopes with one name and different types) is left out, with one warning
per name, so the exposition never has a second ``# HELP``/``# TYPE`` line for a name.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    MetricsData,
    NumberDataPoint,
    Sum,
)

from telemetry.catalogue import OVERFLOW_LABEL, Kind, sample_names
from telemetry.exposition.labels import label_pairs, reserved_names
from telemetry.registry import Registry
from telemetry.store import Stream

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_log = logging.getLogger(__name__)


def escape_label_value(value: str) -> str:
    """Text format 0.0.4 escaping for label values: backslash, double quote and newline."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def label_inner(names: Sequence[str], values: Sequence[str]) -> str:
    """``a="x",b="y",`` — the rendered label pairs with a trailing comma (empty for no labels)."""
    return "".join(f'{n}="{escape_label_value(v)}",' for n, v in zip(names, values, strict=True))


def format_float(value: float | int) -> str:
    """Go's float formatting, as Prometheus and prometheus_client write it."""
    if isinstance(value, int):
        return str(value)
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if value != value:
        return "NaN"
    s = repr(value)
    dot = s.find(".")
    if value > 0 and dot > 6:  # Go switches to exponent notation sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"  # two exponent digits at least, as Go: 1e+06, 1e+10
    return s


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _header(name: str, help_text: str, kind: str) -> str:
    return f"# HELP {name} {escape_help(help_text)}\n# TYPE {name} {kind}\n"


class _HistogramLayout:
    """Per-family constants of a histogram's rendering, computed once."""

    __slots__ = ("bucket", "count", "les", "sum")

    def __init__(self, name: str, bounds: Iterable[float]) -> None:
        self.bucket = f"{name}_bucket{{"
        self.sum = f"{name}_sum"
        self.count = f"{name}_count"
        self.les = [f'le="{format_float(float(b))}"}} ' for b in bounds] + ['le="+Inf"} ']


_layouts: dict[tuple[str, tuple[float, ...]], _HistogramLayout] = {}


def _layout(name: str, bounds: tuple[float, ...]) -> _HistogramLayout:
    layout = _layouts.get((name, bounds))
    if layout is None:
        layout = _layouts[(name, bounds)] = _HistogramLayout(name, bounds)
    return layout


class _Labels:
    """The rendered label text of a stream's series, made once per series: ``a="x",`` for histograms (the
    bucket lines add ``le``), ``name{a="x"} `` for counters and gauges."""

    __slots__ = ("name", "names", "overflow", "text")

    def __init__(self, name: str, names: tuple[str, ...]) -> None:
        self.name = name
        self.names = names
        self.text: dict[tuple[str, ...], str] = {}
        self.overflow = f'{OVERFLOW_LABEL}="true",'

    def inner(self, values: tuple[str, ...]) -> str:
        text = self.text.get(values)
        if text is None:
            text = self.text[values] = label_inner(self.names, values)
        return text

    def prefix(self, values: tuple[str, ...]) -> str:
        text = self.text.get(values)
        if text is None:
            inner = label_inner(self.names, values)
            text = self.text[values] = f"{self.name}{{{inner[:-1]}}} " if inner else f"{self.name} "
        return text


class Renderer:
    """Renders streams and SDK data; keeps the label text of series between scrapes."""

    def __init__(self) -> None:
        self._labels: dict[Stream, _Labels] = {}
        self._warned: set[str] = set()

    def _labels_of(self, stream: Stream, series: int) -> _Labels:
        labels = self._labels.get(stream)
        if labels is None or len(labels.text) > 2 * series + 64:
            labels = self._labels[stream] = _Labels(stream.name, stream.label_names)  # new, or series cleared
        return labels

    def streams(self, streams: Iterable[Stream], out: list[str], taken: set[str]) -> None:
        """Append the catalogue streams to ``out``; their sample names go into ``taken``."""
        for stream in streams:
            name = stream.name
            samples = sample_names(name, stream.kind)
            if not taken.isdisjoint(samples):  # Registry.configure refuses this; a merged source could not
                self.warn_once(name, "another catalogue stream already uses one of its names")
                continue
            taken.update(samples)
            out.append(_header(name, stream.help, stream.kind.value))
            points, overflow = stream.collect()
            labels = self._labels_of(stream, len(points))
            if stream.kind is Kind.HISTOGRAM:
                layout = _layout(name, stream.buckets)
                for values, cell in points:
                    counts, total, count = cell.snapshot()
                    _histogram_lines(out, layout, labels.inner(values), counts, total, count)
                if overflow is not None:
                    counts, total, count = overflow.snapshot()
                    _histogram_lines(out, layout, labels.overflow, counts, total, count)
            else:
                prefix = labels.prefix
                for values, cell in points:
                    value = cell.value
                    out.append(f"{prefix(values)}{value if type(value) is int else format_float(value)}\n")
                if overflow is not None:
                    value = overflow.value
                    out.append(f"{name}{{{labels.overflow[:-1]}}} "
                               f"{value if type(value) is int else format_float(value)}\n")

    def warn_once(self, name: str, why: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            _log.warning("%s is left out of /metrics: %s", name, why)


def _histogram_lines(out: list[str], layout: _HistogramLayout, inner: str, counts: list[int],
                     total: float | int, count: int) -> None:
    bucket = layout.bucket + inner
    cumulative = 0
    for le, n in zip(layout.les, counts, strict=True):
        cumulative += n
        out.append(f"{bucket}{le}{cumulative}\n")
    labels = "{" + inner[:-1] + "}" if inner else ""
    out.append(f"{layout.sum}{labels} {format_float(total)}\n{layout.count}{labels} {count}\n")


# --- OpenTelemetry data, standard naming ---------------------------------------------------------------

_UNITS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds", "us": "microseconds",
    "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes",
    "TiBy": "tibibytes", "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes",
    "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts", "g": "grams", "Cel": "celsius",
    "Hz": "hertz", "%": "percent",
}
_PER = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}
_INVALID = re.compile(r"[^a-zA-Z0-9_:]")
_REPEATS = re.compile(r"__+")


def _unit_suffix(unit: str, is_gauge: bool) -> str:
    unit = re.sub(r"\{[^}]*\}", "", unit or "").strip()
    if unit == "1":
        return "ratio" if is_gauge else ""
    if not unit:
        return ""
    main, _, per = unit.partition("/")
    words = [_UNITS.get(main, main)] if main else []
    if per:
        words.append("per_" + _PER.get(per, per))
    return _REPEATS.sub("_", _INVALID.sub("_", "_".join(words))).strip("_")


def otel_name(name: str, unit: str, *, counter: bool, gauge: bool) -> str:
    """The standard OpenTelemetry-to-Prometheus metric name."""
    base = _REPEATS.sub("_", _INVALID.sub("_", name))
    if base[:1].isdigit():
        base = "_" + base
    if counter and base.endswith("_total"):
        base = base[: -len("_total")]
    suffix = _unit_suffix(unit, gauge)
    if suffix and not base.endswith(suffix):
        base = f"{base}_{suffix}"
    return f"{base}_total" if counter else base


def _inner(attributes: Mapping[str, Any] | None, extra: str, reserved: frozenset[str]) -> str:
    if not attributes:
        return extra
    return extra + "".join(f'{n}="{escape_label_value(v)}",' for n, v in label_pairs(attributes, reserved))


def _names_in(inner: str) -> tuple[str, ...]:
    """The label names of rendered pairs (``a="x",b="y",``)."""
    return tuple(_PAIR_NAME.findall(inner))


_PAIR_NAME = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*",')


def render_otel(data: MetricsData | None, out: list[str], *, target_info: bool, scope_labels: bool,
                taken: set[str] | None = None, renderer: Renderer | None = None, extra: str = "") -> None:
    """Append what the SDK collected. Sample names in ``taken`` (the catalogue's) are never used again;
    ``extra`` (``pid="12",``) is a label put on every series."""
    if data is None:
        return
    taken = set() if taken is None else taken
    renderer = renderer or Renderer()
    families: dict[str, tuple[str, str, list[str]]] = {}
    resource_attrs: dict[str, Any] = {}
    for rm in data.resource_metrics:
        resource_attrs.update(rm.resource.attributes)
        for sm in rm.scope_metrics:
            scope = extra
            if scope_labels:
                scope += (f'otel_scope_name="{escape_label_value(sm.scope.name)}",'
                         f'otel_scope_version="{escape_label_value(sm.scope.version or "")}",')
            for metric in sm.metrics:
                _render_metric(metric, scope, families, taken, renderer)
    if target_info and resource_attrs and "target_info" not in taken:
        out.append(_header("target_info", "Target metadata", "gauge"))
        inner = _inner(resource_attrs, extra, reserved_names(fixed=_names_in(extra)))
        out.append(f"target_info{{{inner[:-1]}}} 1\n")
    for name, (kind, help_text, lines) in families.items():
        out.append(_header(name, help_text, kind))
        out.extend(lines)


def _render_metric(metric: Any, scope: str, families: dict[str, tuple[str, str, list[str]]], taken: set[str],
                   renderer: Renderer) -> None:
    data = metric.data
    if isinstance(data, Sum):
        counter = data.is_monotonic
        kind = Kind.COUNTER if counter else Kind.GAUGE
        name = otel_name(metric.name, metric.unit, counter=counter, gauge=not counter)
    elif isinstance(data, Gauge):
        kind = Kind.GAUGE
        name = otel_name(metric.name, metric.unit, counter=False, gauge=True)
    elif isinstance(data, Histogram):
        kind = Kind.HISTOGRAM
        name = otel_name(metric.name, metric.unit, counter=False, gauge=False)
    else:  # exponential histograms have no text-format equivalent
        return
    entry = families.get(name)
    if entry is None:
        clash = [n for n in sample_names(name, kind) if n in taken]
        if clash:
            renderer.warn_once(name, f"its sample name {clash[0]} is already used by another metric "
                                     f"(one family per name)")
            return
        taken.update(sample_names(name, kind))
        entry = families[name] = (kind.value, metric.description or metric.name, [])
    elif entry[0] != kind.value:
        renderer.warn_once(name, f"another scope exposes it as a {entry[0]}, this one as a {kind.value}")
        return
    lines = entry[2]
    reserved = reserved_names(histogram=kind is Kind.HISTOGRAM, fixed=_names_in(scope))
    for point in data.data_points:
        inner = _inner(point.attributes, scope, reserved)
        if isinstance(point, NumberDataPoint):
            labels = "{" + inner[:-1] + "}" if inner else ""
            lines.append(f"{name}{labels} {format_float(point.value)}\n")
        elif isinstance(point, HistogramDataPoint):
            layout = _layout(name, tuple(point.explicit_bounds))
            _histogram_lines(lines, layout, inner, list(point.bucket_counts), point.sum, point.count)


def render(registry: Registry | None, data: MetricsData | None, *, target_info: bool = True,
           scope_labels: bool = False, renderer: Renderer | None = None) -> str:
    """The whole exposition: catalogue streams first, then what the SDK collected."""
    renderer = renderer or Renderer()
    out: list[str] = []
    taken: set[str] = set()
    if registry is not None:
        renderer.streams(registry.streams(), out, taken)
    render_otel(data, out, target_info=target_info, scope_labels=scope_labels, taken=taken, renderer=renderer)
    return "".join(out)
