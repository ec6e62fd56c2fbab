"""Builds the Grafana dashboards in this folder from a compact description, with metric names from the catalogue.

Run ``python collector/dashboards/generate.py`` after changing a panel: it rewrites ``*.json`` here and
``collector/rules/storage.yml``. ``--check`` exits 1 when a committed file differs from what this script would
write; the tests run it. ``--typescript PATH`` writes the same dashboards as TypeScript object literals for
``tsc --noEmit`` to check against ``@grafana/schema`` (collector/typecheck/; the tests write it to a temporary
directory, and it is not committed: ``collector/typecheck/dashboards.gen.ts`` is git-ignored).

Every metric name comes from ``telemetry.catalogue`` (``spec(name)`` raises on an unknown name), so a renamed
metric breaks generation instead of silently emptying a panel. Every query filters on the ``$job`` and
``$instance`` template variables; rates use ``$__rate_interval`` so a 15 s scrape interval never yields empty
panels; quantiles come from ``histogram_quantile`` over ``sum by (le, ...) (rate(..._bucket))`` — never over a raw
histogram.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TS_NAME = "dashboards.gen.ts"  # the name collector/typecheck/tsconfig.json lists
RULES_OUT = HERE.parent / "rules" / "storage.yml"

if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import telemetry.catalogue as cat  # noqa: E402
from telemetry.catalogue import CATALOGUE, STORAGE_OPERATIONS, Kind, MetricSpec, spec  # noqa: E402
from telemetry.exposition.labels import label_name  # noqa: E402

SCHEMA_VERSION = 42  # the dashboard schema version of @grafana/schema 13.2 (Grafana 13)
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SELECTOR = 'job=~"$job", instance=~"$instance"'
RATE = "$__rate_interval"


# --- names and selectors --------------------------------------------------------------------------------------


def family(name: str, kind: Kind | None = None) -> MetricSpec:
    s = spec(name)
    if kind is not None and s.kind is not kind:
        raise ValueError(f"{name} is a {s.kind.value}, not a {kind.value}")
    return s


def runtime_name(name: str) -> str:
    """A runtime family's name, checked against the catalogue's RUNTIME table."""
    return cat.RUNTIME_BY_NAME[name].name


def sel(name: str, matchers: str = "") -> str:
    """``name{job=~"$job", instance=~"$instance", <matchers>}`` for a counter or gauge of the catalogue."""
    s = family(name)
    if s.kind is Kind.HISTOGRAM:
        raise ValueError(f"{name} is a histogram: use bucket(), hsum() or hcount()")
    return f"{s.name}{{{SELECTOR}{', ' + matchers if matchers else ''}}}"


def _hsample(name: str, suffix: str, matchers: str) -> str:
    s = family(name, Kind.HISTOGRAM)
    sample = f"{s.name}{suffix}"
    assert sample in s.sample_names
    return f"{sample}{{{SELECTOR}{', ' + matchers if matchers else ''}}}"


def rate(name: str, matchers: str = "") -> str:
    return f"rate({sel(name, matchers)}[{RATE}])"


def quantile(q: float, name: str, by: str = "", matchers: str = "") -> str:
    """``histogram_quantile`` over the summed bucket rates: the correct way to get a percentile."""
    labels = ", ".join(["le", *filter(None, (b.strip() for b in by.split(",")))])
    return (f"histogram_quantile({q}, sum by ({labels}) "
            f"(rate({_hsample(name, '_bucket', matchers)}[{RATE}])))")


def mean(name: str, by: str = "", matchers: str = "") -> str:
    group = f" by ({by})" if by else ""
    return (f"sum{group} (rate({_hsample(name, '_sum', matchers)}[{RATE}])) / "
            f"sum{group} (rate({_hsample(name, '_count', matchers)}[{RATE}]))")


def hrate(name: str, by: str = "", matchers: str = "") -> str:
    """Observations per second of a histogram (its ``_count``)."""
    group = f" by ({by})" if by else ""
    return f"sum{group} (rate({_hsample(name, '_count', matchers)}[{RATE}]))"


def srate(name: str, by: str = "", matchers: str = "") -> str:
    group = f" by ({by})" if by else ""
    return f"sum{group} ({rate(name, matchers)})"


def labelled(expr: str, label: str, value: str) -> str:
    """``expr`` with a constant label added, so several such series can be combined with ``or`` or ``max``."""
    return f'label_replace({expr}, "{label}", "{value}", "", "")'


def ratio(name: str, part: str, by: str = "") -> str:
    """Share of ``name``'s rate whose labels match ``part`` (a ratio, not a rate). Where no series matches
    ``part`` (no errors yet), ``or <total> * 0`` makes the ratio 0 instead of no data."""
    total = srate(name, by)
    return f"({srate(name, by, part)} or {total} * 0) / {total}"


# --- panels -----------------------------------------------------------------------------------------------------


@dataclass
class Target:
    expr: str
    legend: str = "__auto"


@dataclass
class P:
    """One panel: ``timeseries`` (default) or ``stat``; ``width`` in grid columns (24 per row)."""

    title: str
    targets: list[Target]
    unit: str = "short"
    kind: str = "timeseries"
    description: str = ""
    width: int = 12
    stack: bool = False
    decimals: int | None = None
    thresholds: list[tuple[float | None, str]] = field(default_factory=lambda: [(None, "green")])
    min: float | None = None


def t(expr: str, legend: str = "__auto") -> Target:
    return Target(expr, legend)


def _field_defaults(p: P) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": p.unit,
        "color": {"mode": "palette-classic" if p.kind == "timeseries" else "thresholds"},
        "thresholds": {"mode": "absolute",
                       "steps": [{"color": c, "value": v} for v, c in p.thresholds]},
        "mappings": [],
    }
    if p.decimals is not None:
        defaults["decimals"] = p.decimals
    if p.min is not None:
        defaults["min"] = p.min
    if p.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line", "lineInterpolation": "linear", "lineWidth": 1, "fillOpacity": 10,
            "gradientMode": "none", "showPoints": "never", "pointSize": 4, "spanNulls": False,
            "axisPlacement": "auto", "axisLabel": "", "axisCenteredZero": False, "axisSoftMin": 0,
            "scaleDistribution": {"type": "linear"},
            "stacking": {"mode": "normal" if p.stack else "none", "group": "A"},
            "hideFrom": {"legend": False, "tooltip": False, "viz": False},
            "thresholdsStyle": {"mode": "off"},
        }
    return defaults


def _options(p: P) -> dict[str, Any]:
    if p.kind == "stat":
        return {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "orientation": "auto", "textMode": "auto", "colorMode": "value", "graphMode": "area",
                "justifyMode": "auto", "wideLayout": True, "showPercentChange": False,
                "percentChangeColorMode": "standard"}
    return {"legend": {"showLegend": True, "displayMode": "list", "placement": "bottom", "calcs": []},
            "tooltip": {"mode": "multi", "sort": "desc"}}


def _panel(p: P, pid: int, x: int, y: int, height: int) -> dict[str, Any]:
    if p.kind not in ("timeseries", "stat"):
        raise ValueError(f"{p.title}: only timeseries and stat panels (graph is deprecated)")
    refs = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    panel: dict[str, Any] = {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": height, "w": p.width, "x": x, "y": y},
        "targets": [{"refId": refs[i], "datasource": DATASOURCE, "editorMode": "code", "expr": tg.expr,
                     "legendFormat": tg.legend, "range": True, "instant": False}
                    for i, tg in enumerate(p.targets)],
        "fieldConfig": {"defaults": _field_defaults(p), "overrides": []},
        "options": _options(p),
    }
    return panel


def _layout(panels: list[P]) -> list[dict[str, Any]]:
    out, x, y, row_height = [], 0, 0, 0
    for i, p in enumerate(panels, start=1):
        height = 4 if p.kind == "stat" else 8
        if x + p.width > 24:
            x, y, row_height = 0, y + row_height, 0
        out.append(_panel(p, i, x, y, height))
        x += p.width
        row_height = max(row_height, height)
    return out


def _variables() -> list[dict[str, Any]]:
    """Data source, then job and instance (from Prometheus's own ``up`` series, which every target has)."""
    def query_var(name: str, label: str, query: str) -> dict[str, Any]:
        return {"type": "query", "name": name, "label": label, "datasource": DATASOURCE, "query": query,
                "refresh": 2, "sort": 1, "multi": True, "includeAll": True, "allValue": ".*",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": [], "hide": 0}

    return [
        {"type": "datasource", "name": "datasource", "label": "Data source", "query": "prometheus",
         "options": [], "hide": 0, "refresh": 1, "regex": ""},
        query_var("job", "Job", "label_values(up, job)"),
        query_var("instance", "Instance", 'label_values(up{job=~"$job"}, instance)'),
    ]


def dashboard(uid: str, title: str, description: str, panels: list[P], tags: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["tuist", "telemetry", *tags],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [{"title": "Tuist telemetry", "type": "dashboards", "tags": ["tuist"], "asDropdown": True,
                   "includeVars": True, "keepTime": True, "icon": "external link", "targetBlank": False,
                   "tooltip": "", "url": ""}],
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": {"list": _variables()},
        "panels": _layout(panels),
    }


# --- the dashboards ---------------------------------------------------------------------------------------------


def runs() -> dict[str, Any]:
    R = cat.RUNS_TOTAL
    D = cat.RUNS_DURATION
    failed = 'status="1"'
    return dashboard("tuist-runs", "Tuist · Runs, previews & accounts",
                     "CLI runs by command, CI share, failures and durations; previews; project and account "
                     "totals; token refresh errors.", [
        P("Runs per minute", [t(f"{srate(R)} * 60", "runs/min")], "short", "stat", width=6),
        P("Failed runs", [t(ratio(R, failed), "failed")], "percentunit", "stat", width=6,
          thresholds=[(None, "green"), (0.05, "orange"), (0.2, "red")]),
        P("Projects", [t(f"max({sel(cat.PROJECTS)})", "projects")], "short", "stat", width=4),
        P("Organizations", [t(f"max({sel(cat.ORGANIZATIONS)})", "organizations")], "short",
          "stat", width=4),
        P("Users", [t(f"max({sel(cat.USERS)})", "users")], "short", "stat", width=4),
        P("Runs by command", [t(srate(R, "name"), "{{name}}")], "ops", stack=True),
        P("Runs: CI vs local", [t(srate(R, "is_ci"), "is_ci={{is_ci}}")], "ops", stack=True),
        P("Failure ratio by command", [t(ratio(R, failed, "name"), "{{name}}")], "percentunit", min=0),
        P("Run duration p50 / p95", [t(quantile(0.5, D), "p50"), t(quantile(0.95, D), "p95")], "ms"),
        P("Run duration p95 by command", [t(quantile(0.95, D, "name"), "{{name}}")], "ms"),
        P("Mean run duration by command", [t(mean(D, "name"), "{{name}}")], "ms"),
        P("Previews", [t(srate(cat.PREVIEWS_UPLOADS), "uploads"),
                       t(srate(cat.PREVIEWS_DOWNLOADS), "downloads")], "ops"),
        P("Token refresh errors by reason",
          [t(srate(cat.TOKEN_REFRESH_ERRORS, "reason"), "{{reason}}")], "ops",
          stack=True),
    ], ("runs",))


def cache() -> dict[str, Any]:
    E = cat.CACHE_EVENTS
    hits = 'event_type=~"local_hit|remote_hit"'
    return dashboard("tuist-cache", "Tuist · Binary cache", "Binary cache hit ratio, events, uploads and downloads.", [
        P("Hit ratio", [t(ratio(E, hits), "hit ratio")], "percentunit", "stat", width=6,
          thresholds=[(None, "red"), (0.5, "orange"), (0.8, "green")]),
        P("Events per second", [t(srate(E), "events/s")], "ops", "stat", width=6),
        P("Upload throughput", [t(srate(cat.CACHE_UPLOADED_BYTES), "uploaded")], "Bps", "stat", width=6),
        P("Download throughput", [t(srate(cat.CACHE_DOWNLOADED_BYTES), "downloaded")], "Bps", "stat",
          width=6),
        P("Hit ratio over time", [t(ratio(E, hits), "hit ratio"),
                                  t(ratio(E, 'event_type="remote_hit"'), "remote share")], "percentunit", min=0),
        P("Events by type", [t(srate(E, "event_type"), "{{event_type}}")], "ops", stack=True),
        P("Uploads and downloads", [t(srate(cat.CACHE_UPLOADS), "uploads"),
                                    t(srate(cat.CACHE_DOWNLOADS), "downloads")], "ops"),
        P("Bytes transferred", [t(srate(cat.CACHE_UPLOADED_BYTES), "uploaded"),
                                t(srate(cat.CACHE_DOWNLOADED_BYTES), "downloaded")], "Bps"),
        P("Mean artifact size", [
            t(f"{srate(cat.CACHE_UPLOADED_BYTES)} / {srate(cat.CACHE_UPLOADS)}", "upload"),
            t(f"{srate(cat.CACHE_DOWNLOADED_BYTES)} / {srate(cat.CACHE_DOWNLOADS)}", "download")],
          "bytes", width=24),
    ], ("cache",))


# --- storage: per-object series, summed by recording rules -----------------------------------------------------
#
# Every storage metric carries a per-object label (object_key, upload_id, part_number, project_slug), so most of
# its series are created by one operation and never move again: rate() over such a series is 0 (its first
# sample is already 1), and a dashboard summing rates shows no operations at all. Summing the cumulative series
# over those labels first (recording rules in rules/storage.yml, generated below) gives one counter per
# instance that grows with every operation; the panels and the slow-storage alert take rates of those.


def aggregate(sample: str) -> str:
    """The recorded name of a storage ``sample`` summed over its per-object labels."""
    return f"instance:{sample}:sum"


def _storage_specs() -> list[MetricSpec]:
    return [s for s in CATALOGUE if s.domain == "storage"]


def _recorded(s: MetricSpec) -> str:
    return f"{s.name}_bucket" if s.kind is Kind.HISTOGRAM else s.name


def storage_rules() -> dict[str, Any]:
    rules: list[dict[str, Any]] = [
        {"record": aggregate(_recorded(s)), "expr": f"sum without ({', '.join(s.labels)}) ({_recorded(s)})"}
        for s in _storage_specs()]
    # Rules of a group run in order, so these read the sums recorded just above in the same evaluation.
    for op in STORAGE_OPERATIONS:
        histogram, _ = _storage_names(op)
        rules.append({"record": "job_operation:tuist_storage_duration_milliseconds:p95_rate5m",
                      "expr": f"histogram_quantile(0.95, sum by (job, le) "
                              f"(rate({aggregate(histogram + '_bucket')}[5m])))",
                      "labels": {"operation": op}})
    return {"groups": [{"name": "tuist-storage", "rules": rules}]}


def arate(name: str) -> str:
    """Operations per second of a storage counter, from its per-instance sum."""
    s = family(name, Kind.COUNTER)
    return f"sum (rate({aggregate(s.name)}{{{SELECTOR}}}[{RATE}]))"


def aquantile(q: float, name: str) -> str:
    s = family(name, Kind.HISTOGRAM)
    return f"histogram_quantile({q}, sum by (le) (rate({aggregate(s.name + '_bucket')}{{{SELECTOR}}}[{RATE}])))"


def _storage_names(op: str) -> tuple[str, str]:
    """The duration histogram and the count of ``op`` (the doc spells some oddly: the catalogue knows how)."""
    names = cat.storage_names(op)
    return names.duration, names.count


def storage() -> dict[str, Any]:
    ops = {op: _storage_names(op) for op in STORAGE_OPERATIONS}
    size = cat.storage_names("get_object_size").size
    assert size is not None
    # A missing operation counts as 0 in the total; `or` needs distinct labels, hence the operation label.
    total = " + ".join(f"({arate(c)} or vector(0))" for _, c in ops.values())
    slowest = " or ".join(labelled(aquantile(0.95, h), "operation", op) for op, (h, _) in ops.items())
    return dashboard("tuist-storage", "Tuist · Remote storage",
                     "Remote storage (S3-compatible) operations: rates, latency percentiles and object sizes. "
                     "Needs the recording rules in collector/rules/storage.yml (per-object series summed).", [
        P("Storage operations per second", [t(total, "ops/s")], "ops", "stat", width=8),
        P("Slowest operation p95", [t(f"max({slowest})", "p95")], "ms", "stat", width=8),
        P("Object size p50", [t(aquantile(0.5, size), "p50")], "bytes", "stat", width=8),
        P("Operations per second", [t(arate(c), op) for op, (_, c) in ops.items()], "ops", stack=True,
          width=24),
        P("Latency p95 by operation", [t(aquantile(0.95, h), op) for op, (h, _) in ops.items()], "ms", width=24),
        P("Latency p50 by operation", [t(aquantile(0.5, h), op) for op, (h, _) in ops.items()], "ms"),
        P("Object sizes (get_object_size)", [t(aquantile(0.5, size), "p50"), t(aquantile(0.95, size), "p95")],
          "bytes"),
    ], ("storage",))


def http_client() -> dict[str, Any]:
    C = cat.HTTP_REQUEST_COUNT
    D = cat.HTTP_REQUEST_DURATION
    phases = cat.HTTP_PHASES
    return dashboard("tuist-http-client", "Tuist · Outbound HTTP client",
                     "Outbound HTTP requests (httpx/httpcore): rates, errors, latency by phase and pool state.", [
        P("Requests per second", [t(srate(C), "req/s")], "reqps", "stat", width=6),
        P("5xx ratio", [t(ratio(C, 'status=~"5.."'), "5xx")], "percentunit", "stat", width=6,
          thresholds=[(None, "green"), (0.01, "orange"), (0.05, "red")]),
        P("Pool connections in use", [t(f"sum({sel(cat.HTTP_IN_USE)})", "in use")],
          "short", "stat", width=6),
        P("Pool connections available",
          [t(f"sum({sel(cat.HTTP_AVAILABLE)})", "available")], "short", "stat", width=6),
        P("Requests by host and status", [t(srate(C, "host, status"), "{{host}} {{status}}")], "reqps",
          stack=True),
        P("5xx ratio by host", [t(ratio(C, 'status=~"5.."', "host"), "{{host}}")], "percentunit", min=0),
        P("Request duration p95 by host", [t(quantile(0.95, D, "host"), "{{host}}")], "ns"),
        P("Request duration p50 / p99", [t(quantile(0.5, D), "p50"), t(quantile(0.99, D), "p99")], "ns"),
        P("Phase duration p95", [t(quantile(0.95, cat.http_phase_names(ph)[1]), ph)
                                 for ph in phases], "ns"),
        P("Phase counts", [t(srate(cat.http_phase_names(ph)[0]), ph) for ph in phases], "ops"),
        P("Pool connections by host", [
            t(f"sum by (host) ({sel(cat.HTTP_IN_USE)})", "{{host}} in use"),
            t(f"sum by (host) ({sel(cat.HTTP_AVAILABLE)})", "{{host}} available")],
          "short"),
        P("Connection idle time before reuse p95",
          [t(quantile(0.95, cat.HTTP_QUEUE_IDLE_TIME, "host"), "{{host}}")], "ns"),
    ], ("http",))


def database() -> dict[str, Any]:
    Q = cat.REPO_QUERY_DURATION
    return dashboard("tuist-database", "Tuist · Database pool",
                     "Database connection pool: queue, ready and active connections, churn and statement "
                     "latency.", [
        P("Checkout queue", [t(f"sum({sel(cat.REPO_CHECKOUT_QUEUE)})", "queued")], "short",
          "stat", width=6, thresholds=[(None, "green"), (1, "red")]),
        P("Ready connections", [t(f"sum({sel(cat.REPO_READY)})", "ready")], "short",
          "stat", width=6),
        P("Active connections", [t(f"sum({sel(cat.DB_CONNECTIONS_ACTIVE)})", "active")], "short", "stat", width=6),
        P("Statements per second", [t(hrate(Q), "statements/s")], "ops", "stat", width=6),
        P("Checkout queue by pool", [t(f"sum by (pool) ({sel(cat.REPO_CHECKOUT_QUEUE)})",
                                       "{{pool}}")], "short"),
        P("Connections by pool", [
            t(f"sum by (pool) ({sel(cat.REPO_READY)})", "{{pool}} ready"),
            t(f"sum by (pool) ({sel(cat.DB_CONNECTIONS_ACTIVE)})", "{{pool}} active")], "short"),
        P("Connections opened / closed", [
            t(srate(cat.REPO_CONNECTED, "pool"), "{{pool}} connected"),
            t(srate(cat.REPO_DISCONNECTED, "pool"), "{{pool}} disconnected")], "ops"),
        P("Statements by kind", [t(hrate(Q, "statement"), "{{statement}}")], "ops", stack=True),
        P("Statement latency p95 by kind", [t(quantile(0.95, Q, "statement"), "{{statement}}")], "ms"),
        P("Statement latency p50 / p99", [t(quantile(0.5, Q), "p50"), t(quantile(0.99, Q), "p99")], "ms"),
    ], ("database",))


def inbound_http() -> dict[str, Any]:
    C = cat.INBOUND_REQUESTS
    D = cat.INBOUND_DURATION
    errors = 'status=~"5.."'
    return dashboard("tuist-inbound-http", "Tuist · Inbound HTTP",
                     "Requests served by the service: rate, error ratio (5xx over all) and latency percentiles "
                     "by route.", [
        P("Requests per second", [t(srate(C), "req/s")], "reqps", "stat", width=8),
        P("Error ratio (5xx / all)", [t(ratio(C, errors), "5xx")], "percentunit", "stat", width=8,
          thresholds=[(None, "green"), (0.01, "orange"), (0.05, "red")]),
        P("p99 latency", [t(quantile(0.99, D), "p99")], "s", "stat", width=8,
          thresholds=[(None, "green"), (0.5, "orange"), (1, "red")]),
        P("Requests by route", [t(srate(C, "method, route"), "{{method}} {{route}}")], "reqps", stack=True),
        P("Requests by status", [t(srate(C, "status"), "{{status}}")], "reqps", stack=True),
        P("Error ratio by route", [t(ratio(C, errors, "route"), "{{route}}")], "percentunit", min=0),
        P("Latency p50 / p95 / p99", [t(quantile(0.5, D), "p50"), t(quantile(0.95, D), "p95"),
                                      t(quantile(0.99, D), "p99")], "s"),
        P("Latency p95 by route", [t(quantile(0.95, D, "route"), "{{route}}")], "s"),
        P("Mean latency by route", [t(mean(D, "route"), "{{route}}")], "s"),
    ], ("http",))


def runtime() -> dict[str, Any]:
    # Runtime metrics are per-process SDK metrics (telemetry/instrumentation/runtime.py), named in the catalogue's
    # RUNTIME table; the tests also check every name below against a live scrape.
    s = SELECTOR
    uptime, rss, cpu, fds, threads, gc_runs, info = (runtime_name(n) for n in (
        cat.PROCESS_UPTIME, cat.PROCESS_MEMORY_USAGE, cat.PROCESS_CPU_TIME, cat.PROCESS_OPEN_FILE_DESCRIPTORS,
        cat.PROCESS_THREADS, cat.CPYTHON_GC_COLLECTIONS, cat.APPLICATION_INFO))
    cpu_mode, generation = label_name(cat.CPU_MODE), label_name(cat.GC_GENERATION)
    return dashboard("tuist-runtime", "Tuist · Runtime & telemetry health",
                     "Process and CPython runtime metrics, build info, and the health of the telemetry "
                     "itself (dropped analytics events, cardinality overflow).", [
        P("Uptime", [t(f"max({uptime}{{{s}}})", "uptime")], "s", "stat", width=6),
        P("Resident memory", [t(f"sum({rss}{{{s}}})", "rss")], "bytes", "stat", width=6),
        P("Analytics events dropped (1h)", [t(f"sum(increase({sel(cat.ANALYTICS_DROPPED)}[1h]))",
                                              "dropped")], "short", "stat", width=6,
          thresholds=[(None, "green"), (1, "red")]),
        P("Cardinality overflow (1h)",
          [t(f"sum(increase({sel(cat.OVERFLOW_METRIC)}[1h]))", "overflowed")],
          "short", "stat", width=6, thresholds=[(None, "green"), (1, "orange")]),
        P("CPU usage by mode", [t(f"sum by (instance, {cpu_mode}) (rate({cpu}{{{s}}}[{RATE}]))",
                                  f"{{{{instance}}}} {{{{{cpu_mode}}}}}")], "percentunit", stack=True),
        P("Resident memory by instance", [t(f"{rss}{{{s}}}", "{{instance}}")], "bytes"),
        P("Open file descriptors", [t(f"{fds}{{{s}}}", "{{instance}}")], "short"),
        P("OS threads", [t(f"{threads}{{{s}}}", "{{instance}}")], "short"),
        P("GC collections by generation",
          [t(f"sum by ({generation}) (rate({gc_runs}{{{s}}}[{RATE}]))",
             f"gen {{{{{generation}}}}}")], "ops"),
        P("Versions", [t(f"max by (service_name, service_version, python_version) ({info}{{{s}}})",
                         "{{service_name}} {{service_version}} (Python {{python_version}})")], "short"),
        P("Analytics events dropped by reason",
          [t(srate(cat.ANALYTICS_DROPPED, "reason"), "{{reason}}")], "ops"),
        P("Cardinality overflow by metric",
          [t(srate(cat.OVERFLOW_METRIC, "metric"), "{{metric}}")], "ops"),
    ], ("runtime",))


DASHBOARDS = {"runs": runs, "cache": cache, "storage": storage, "http-client": http_client,
              "database": database, "inbound-http": inbound_http, "runtime": runtime}


def typescript() -> str:
    """Every dashboard as a TypeScript literal typed ``CheckedDashboard`` (collector/typecheck/types.ts)."""
    ts = ["// Generated by collector/dashboards/generate.py --typescript from the dashboards in collector/dashboards/.",
          "// `tsc --noEmit` checks each literal against @grafana/schema (see types.ts).",
          'import type { CheckedDashboard } from "./types";', ""]
    for name, build in DASHBOARDS.items():
        text = json.dumps(build(), indent=2)
        ts.append(f"export const {name.replace('-', '_')}: CheckedDashboard = {text};\n")
    return "\n".join(ts)


def render() -> dict[Path, str]:
    """Every committed file this script owns, path -> content."""
    files: dict[Path, str] = {}
    for name, build in DASHBOARDS.items():
        files[HERE / f"{name}.json"] = json.dumps(build(), indent=2) + "\n"
    files[RULES_OUT] = ("# Generated by collector/dashboards/generate.py from telemetry/catalogue.py: do not edit.\n"
                        "# Storage metrics carry per-object labels, so most series count one operation and never\n"
                        "# move: rate() over them is 0. These rules sum each family over those labels per instance\n"
                        "# (one counter that grows with every operation); the storage dashboard and the\n"
                        "# StorageOperationSlow alert read the sums.\n"
                        + yaml.safe_dump(storage_rules(), sort_keys=False, width=200))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is out of date")
    parser.add_argument("--typescript", type=Path, metavar="PATH",
                        help=f"write the dashboards as TypeScript literals for tsc to PATH (a {TS_NAME} beside a "
                             "copy of collector/typecheck/types.ts) and exit")
    args = parser.parse_args(argv)
    if args.typescript:
        args.typescript.write_text(typescript())
        return 0
    stale = []
    for path, text in render().items():
        current = path.read_text() if path.exists() else None
        if current != text:
            stale.append(path)
            if not args.check:
                path.write_text(text)
    if args.check and stale:
        print("out of date (run python collector/dashboards/generate.py): "
              + ", ".join(str(p.relative_to(ROOT)) for p in stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
