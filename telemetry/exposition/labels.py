"""OpenTelemetry attributes as Prometheus labels: the one sanitiser ``/metrics`` (``render``) and remote write
(``telemetry.remote_write``) share, so both give every series the same label names.

By OpenTelemetry's Prometheus compatibility rules: characters outside ``[a-zA-Z0-9_]`` become ``_``, a name
starting with a digit gets ``key_`` in front and one starting with ``__`` (Prometheus reserves those, e.g.
``__name__``) gets ``key`` (``__name__`` becomes ``key__name__``); keys that sanitise to one name are merged,
their values joined with ``;`` in the order of the original keys. A name the series already carries for another
reason — ``le`` on a histogram's buckets, ``quantile`` (a summary's), the ``otel_scope_*`` and ``pid`` labels
the exposition adds, ``job``/``instance`` in remote write — would repeat a label, which makes Prometheus refuse
the whole scrape or request: such an attribute is dropped, with one warning per key.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

_log = logging.getLogger(__name__)

BUCKET_LABEL = "le"
QUANTILE_LABEL = "quantile"
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]")
_warned: set[str] = set()
_warned_lock = threading.Lock()
_MAX_WARNED = 1000  # keys come from code, but a bound keeps a key-per-request bug from growing this set


def label_name(key: str) -> str:
    """The Prometheus label name of an attribute key."""
    name = _INVALID_LABEL.sub("_", key)
    if not name or name[:1].isdigit():
        name = "key_" + name
    elif name.startswith("__"):
        name = "key" + name
    return name


def attribute_value(value: Any) -> str:
    """An attribute value as label text: bools as true/false, sequences as JSON (as the stock exporter)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return json.dumps(list(value))
    return str(value)


def reserved_names(*, histogram: bool = False, fixed: Iterable[str] = ()) -> frozenset[str]:
    """Label names an attribute may not take on one series: ``quantile``, ``le`` on a histogram, and the
    ``fixed`` labels the exporter adds itself."""
    return frozenset((QUANTILE_LABEL, *((BUCKET_LABEL,) if histogram else ()), *fixed))


def label_pairs(attributes: Mapping[str, Any] | None, reserved: frozenset[str]) -> list[tuple[str, str]]:
    """(label name, value) of each attribute, sanitised and merged as the module docstring says; names in
    ``reserved`` dropped."""
    if not attributes:
        return []
    names = [label_name(k) for k in attributes]
    if len(set(names)) == len(names) and reserved.isdisjoint(names):
        return [(n, attribute_value(v)) for n, v in zip(names, attributes.values(), strict=True)]
    merged: dict[str, list[str]] = {}
    for key in sorted(attributes):
        name = label_name(key)
        if name in reserved:
            _warn_dropped(key, name)
            continue
        merged.setdefault(name, []).append(attribute_value(attributes[key]))
    return [(n, ";".join(v)) for n, v in merged.items()]


def _warn_dropped(key: str, name: str) -> None:
    with _warned_lock:
        if key in _warned or len(_warned) >= _MAX_WARNED:
            return
        _warned.add(key)
    _log.warning("the OpenTelemetry attribute %r is left off the Prometheus series: its label name %r is one "
                 "the series already has (or Prometheus reserves)", key, name)
