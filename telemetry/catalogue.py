"""The metric catalogue: every metric this package owns, as data.

The 53 names documented on the Tuist "Telemetry" self-hosting page are the contract: dashboards and alerts
query them verbatim, so the spellings below are copied from the doc, quirks included
(``..._duration_miliseconds``, ``tuist_http_request_duration_nanosecond``,
``tuist_storage_multipart_start_upload_duration_count``). A few project-owned metrics follow (inbound HTTP,
DB pool extras, analytics health, the cardinality guard); they are marked ``documented=False``.

Everything else derives from this table: the recording API, the store, the exposition, the README table, the
tests and the dashboards' name checks. No metric name or label name is typed anywhere else.

``RUNTIME`` names the per-process runtime families the same way (process, CPython and version metrics, among
them prometheus_client's ``process_*`` names): they are read through the OpenTelemetry SDK, not the registry.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class Kind(enum.Enum):
    """How a family is exposed to Prometheus (the ``# TYPE`` line)."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


# Bucket boundaries, chosen per unit and per what is being timed.
RUN_MS: tuple[float, ...] = (
    100, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000, 3_600_000,
)
STORAGE_MS: tuple[float, ...] = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000)
DB_MS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1_000, 5_000)
OBJECT_BYTES: tuple[float, ...] = tuple(float(1024 * 4**i) for i in range(11))  # 1 KiB .. 1 GiB
HTTP_NS: tuple[float, ...] = (
    50_000, 100_000, 250_000, 500_000, 1e6, 2.5e6, 5e6, 1e7, 2.5e7, 5e7, 1e8, 2.5e8, 5e8, 1e9, 2.5e9, 5e9, 1e10,
)
WEB_SECONDS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

BOOL_VALUES = frozenset({"true", "false"})
STATUS_VALUES = frozenset({"0", "1"})  # the doc: 0 on success, 1 on failure
CACHE_EVENT_TYPES = frozenset({"local_hit", "remote_hit", "miss"})
TOKEN_REFRESH_REASONS = frozenset({"invalid_token_type", "invalid_token"})
STATEMENT_KINDS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "OTHER"})
ANALYTICS_DROP_REASONS = frozenset({"queue_full", "send_failed", "error", "shutdown"})

# Every family name with a fixed spelling, written once; code elsewhere imports these. The storage and HTTP
# phase families are spelled by rules below (``storage_names``, ``http_phase_names``).
RUNS_TOTAL = "tuist_runs_total"
RUNS_DURATION = "tuist_runs_duration_milliseconds"
CACHE_EVENTS = "tuist_cache_events_total"
CACHE_UPLOADS = "tuist_cache_uploads_total"
CACHE_UPLOADED_BYTES = "tuist_cache_uploaded_bytes"
CACHE_DOWNLOADS = "tuist_cache_downloads_total"
CACHE_DOWNLOADED_BYTES = "tuist_cache_downloaded_bytes"
PREVIEWS_UPLOADS = "tuist_previews_uploads_total"
PREVIEWS_DOWNLOADS = "tuist_previews_downloads_total"
TOKEN_REFRESH_ERRORS = "tuist_authentication_token_refresh_error_total"
PROJECTS = "tuist_projects_total"
ORGANIZATIONS = "tuist_accounts_organizations_total"
USERS = "tuist_accounts_users_total"
REPO_CHECKOUT_QUEUE = "tuist_repo_pool_checkout_queue_length"
REPO_READY = "tuist_repo_pool_ready_conn_count"
REPO_CONNECTED = "tuist_repo_pool_db_connection_connected"
REPO_DISCONNECTED = "tuist_repo_pool_db_connection_disconnected"
REPO_QUERY_DURATION = "tuist_repo_query_duration_milliseconds"
DB_CONNECTIONS_ACTIVE = "db_connections_active"
HTTP_REQUEST_COUNT = "tuist_http_request_count"
HTTP_REQUEST_DURATION = "tuist_http_request_duration_nanosecond"
HTTP_QUEUE_IDLE_TIME = "tuist_http_queue_idle_time_nanoseconds"
HTTP_AVAILABLE = "tuist_http_queue_available_connections"
HTTP_IN_USE = "tuist_http_queue_in_use_connections"
INBOUND_REQUESTS = "http_requests_total"
INBOUND_DURATION = "http_request_duration_seconds"
ANALYTICS_DROPPED = "tuist_analytics_events_dropped_total"
OVERFLOW_METRIC = "tuist_telemetry_overflow_measurements_total"

# The eight storage operations the doc times and counts, in the doc's order.
STORAGE_OPERATIONS: tuple[str, ...] = (
    "get_object_size",
    "delete_all_objects",
    "multipart_start_upload",
    "get_object_as_string",
    "check_object_existence",
    "generate_download_presigned_url",
    "multipart_generate_upload_part_presigned_url",
    "multipart_complete_upload",
)
# The outbound HTTP phases the doc counts and times.
HTTP_PHASES: tuple[str, ...] = ("queue", "connection", "send", "receive")


@dataclass(frozen=True)
class StorageNames:
    """The families of one storage operation; ``size`` only for get_object_size."""

    duration: str
    count: str
    size: str | None = None


def storage_names(operation: str) -> StorageNames:
    """The doc's spellings: one "miliseconds", and one count named after its histogram."""
    if operation not in STORAGE_OPERATIONS:
        raise ValueError(f"unknown storage operation {operation!r}; the documented ones are {list(STORAGE_OPERATIONS)}")
    base = f"tuist_storage_{operation}"
    if operation == "get_object_size":
        return StorageNames(f"{base}_duration_miliseconds", f"{base}_count", f"{base}_size_bytes")
    if operation == "multipart_start_upload":
        return StorageNames(f"{base}_duration_milliseconds", f"{base}_duration_count")
    return StorageNames(f"{base}_duration_milliseconds", f"{base}_count")


def http_phase_names(phase: str) -> tuple[str, str]:
    """(count, duration histogram) of one outbound HTTP phase."""
    if phase not in HTTP_PHASES:
        raise ValueError(f"unknown HTTP phase {phase!r}; the documented ones are {list(HTTP_PHASES)}")
    return f"tuist_http_{phase}_count", f"tuist_http_{phase}_duration_nanoseconds"


_INSTRUMENT_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)+")


@dataclass(frozen=True)
class MetricSpec:
    """One metric family.

    ``name`` is the family name on /metrics. ``instrument`` is the OpenTelemetry instrument the package's
    meter creates for it (OpenTelemetry-style name, ``unit`` as its unit); the package's View gives that
    instrument ``name``, ``buckets`` and ``labels``. ``doc_names`` are the sample names the doc lists for it
    (a histogram documented as ``X_sum`` and ``X_bucket`` has both). ``doc_type`` is the type word the doc
    uses (counter, count, sum, histogram, distribution, last_value).
    """

    name: str
    kind: Kind
    help: str
    domain: str
    instrument: str
    labels: tuple[str, ...] = ()
    unit: str = ""
    allowed: Mapping[str, frozenset[str]] = field(default_factory=dict)
    buckets: tuple[float, ...] = ()
    doc_type: str = ""
    doc_names: tuple[str, ...] = ()
    documented: bool = True

    def __post_init__(self) -> None:
        if not _INSTRUMENT_NAME.fullmatch(self.instrument) or self.instrument == self.name:
            raise ValueError(f"{self.name}: {self.instrument!r} is not an OpenTelemetry-style instrument name")
        if (self.kind is Kind.HISTOGRAM) != bool(self.buckets):
            raise ValueError(f"{self.name}: histograms, and only histograms, have buckets")
        if list(self.buckets) != sorted(set(self.buckets)):
            raise ValueError(f"{self.name}: buckets must be strictly increasing")
        unknown = set(self.allowed) - set(self.labels)
        if unknown:
            raise ValueError(f"{self.name}: allowed values for unknown labels {sorted(unknown)}")
        object.__setattr__(self, "allowed", MappingProxyType(dict(self.allowed)))
        if not self.doc_names and self.documented:
            object.__setattr__(self, "doc_names", (self.name,))

    @property
    def sample_names(self) -> tuple[str, ...]:
        """Every sample name this family puts on /metrics."""
        if self.kind is Kind.HISTOGRAM:
            return tuple(f"{self.name}{s}" for s in ("_bucket", "_sum", "_count"))
        return (self.name,)


def sample_names(name: str, kind: Kind) -> tuple[str, ...]:
    """Every name a family called ``name`` puts on /metrics (the family name, and a histogram's samples)."""
    if kind is Kind.HISTOGRAM:
        return (name, f"{name}_bucket", f"{name}_sum", f"{name}_count")
    return (name,)


def _counter(name: str, instrument: str, help: str, domain: str, *labels: str, unit: str = "",
             doc_type: str = "counter", **kw: object) -> MetricSpec:
    return MetricSpec(name, Kind.COUNTER, help, domain, instrument, labels, unit, doc_type=doc_type,
                      **kw)  # type: ignore[arg-type]


def _gauge(name: str, instrument: str, help: str, domain: str, *labels: str, **kw: object) -> MetricSpec:
    return MetricSpec(name, Kind.GAUGE, help, domain, instrument, labels, doc_type="last_value",
                      **kw)  # type: ignore[arg-type]


def _histogram(name: str, instrument: str, help: str, domain: str, *labels: str, unit: str,
               buckets: tuple[float, ...], doc_type: str = "histogram", **kw: object) -> MetricSpec:
    return MetricSpec(name, Kind.HISTOGRAM, help, domain, instrument, labels, unit, buckets=buckets,
                      doc_type=doc_type, **kw)  # type: ignore[arg-type]


def _storage_specs() -> Iterator[MetricSpec]:
    """The storage section: a duration histogram and a count per operation, spelled as in the doc."""
    object_key = ("object_key",)
    labels = {
        "delete_all_objects": ("project_slug",),
        "multipart_generate_upload_part_presigned_url": ("object_key", "part_number", "upload_id"),
        "multipart_complete_upload": ("object_key", "upload_id"),
    }
    what = {
        "get_object_size": "fetching an object's size from remote storage",
        "delete_all_objects": "deleting all of a project's objects from remote storage",
        "multipart_start_upload": "starting a multipart upload to remote storage",
        "get_object_as_string": "fetching an object as a string from remote storage",
        "check_object_existence": "checking whether an object exists in remote storage",
        "generate_download_presigned_url": "generating a presigned download URL for an object",
        "multipart_generate_upload_part_presigned_url": "generating a presigned URL for one part of a "
                                                        "multipart upload",
        "multipart_complete_upload": "completing a multipart upload to remote storage",
    }
    count_doc_type = {"get_object_as_string", "check_object_existence", "generate_download_presigned_url",
                      "multipart_generate_upload_part_presigned_url", "multipart_complete_upload"}
    for op in STORAGE_OPERATIONS:
        op_labels = labels.get(op, object_key)
        names = storage_names(op)
        instrument = f"tuist.storage.{op}"
        if names.size:
            yield _histogram(names.size, f"{instrument}.size",
                             "Size in bytes of objects whose size was fetched from remote storage.",
                             "storage", *op_labels, unit="By", buckets=OBJECT_BYTES)
        yield _histogram(names.duration, f"{instrument}.duration", f"Time in milliseconds spent {what[op]}.",
                         "storage", *op_labels,
                         unit="ms", buckets=STORAGE_MS)
        yield _counter(names.count, f"{instrument}.count",
                       f"Number of times remote storage was asked for: {what[op]}.", "storage", *op_labels,
                       doc_type="count" if op in count_doc_type else "counter")


def _http_specs() -> Iterator[MetricSpec]:
    """The outbound HTTP client section (the doc's Finch metrics; httpx/httpcore here)."""
    request = ("method", "host", "status")
    host = ("host",)
    yield _counter(HTTP_REQUEST_COUNT, "tuist.http.request.count", "Number of outbound HTTP requests.", "http",
                   *request)
    yield _histogram(HTTP_REQUEST_DURATION, "tuist.http.request.duration",
                     "Duration of outbound HTTP requests in nanoseconds, from the request's start until its "
                     "response was closed, including the wait for a pool connection.", "http", *request,
                     unit="ns", buckets=HTTP_NS, doc_type="distribution",
                     doc_names=(f"{HTTP_REQUEST_DURATION}_sum", f"{HTTP_REQUEST_DURATION}_bucket"))
    phases = {
        "queue": ("Number of requests that took a connection from the pool.",
                  "Time in nanoseconds spent waiting for a connection from the pool."),
        "connection": ("Number of connections established.",
                       "Time in nanoseconds spent establishing a connection to a host (TCP and TLS)."),
        "send": ("Number of requests sent after taking a connection from the pool.",
                 "Time in nanoseconds spent sending a request's headers and body."),
        "receive": ("Number of responses received for sent requests.",
                    "Time in nanoseconds spent receiving a response's headers and body."),
    }
    for phase in HTTP_PHASES:
        count_help, duration_help = phases[phase]
        count, family = http_phase_names(phase)
        yield _counter(count, f"tuist.http.{phase}.count", count_help, "http", *host)
        yield _histogram(family, f"tuist.http.{phase}.duration",
                         duration_help, "http", *host, unit="ns", buckets=HTTP_NS,
                         doc_type="distribution", doc_names=(f"{family}_sum", f"{family}_bucket"))
        if phase == "queue":
            idle = HTTP_QUEUE_IDLE_TIME
            yield _histogram(idle, "tuist.http.queue.idle_time",
                             "Time in nanoseconds the connection that served a request had sat idle in "
                                   "the pool before it (0 for a new connection).", "http", *host, unit="ns",
                             buckets=HTTP_NS, doc_type="distribution", doc_names=(f"{idle}_sum", f"{idle}_bucket"))
    yield _gauge(HTTP_AVAILABLE, "tuist.http.queue.available_connections",
                 "Idle connections available in the HTTP pool.",
                 "http", *host)
    yield _gauge(HTTP_IN_USE, "tuist.http.queue.in_use_connections", "HTTP pool connections in use.", "http", *host)


def _build() -> tuple[MetricSpec, ...]:
    run = ("name", "is_ci", "status")
    run_allowed = {"is_ci": BOOL_VALUES, "status": STATUS_VALUES}
    specs: list[MetricSpec] = [
        _counter(RUNS_TOTAL, "tuist.runs", "Total number of Tuist runs.", "runs", *run, allowed=run_allowed),
        _histogram(RUNS_DURATION, "tuist.runs.duration", "Total duration of each Tuist run in milliseconds.",
                   "runs", *run, unit="ms", buckets=RUN_MS, allowed=run_allowed),
        _counter(CACHE_EVENTS, "tuist.cache.events", "Total number of binary cache events.", "cache", "event_type",
                 allowed={"event_type": CACHE_EVENT_TYPES}),
        _counter(CACHE_UPLOADS, "tuist.cache.uploads", "Number of uploads to the binary cache.", "cache"),
        _counter(CACHE_UPLOADED_BYTES, "tuist.cache.uploaded",
                 "Bytes uploaded to the binary cache.", "cache", unit="By",
                 doc_type="sum"),
        _counter(CACHE_DOWNLOADS, "tuist.cache.downloads", "Number of downloads from the binary cache.", "cache"),
        _counter(CACHE_DOWNLOADED_BYTES, "tuist.cache.downloaded",
                 "Bytes downloaded from the binary cache.", "cache", unit="By",
                 doc_type="sum"),
        _counter(PREVIEWS_UPLOADS, "tuist.previews.uploads", "Total number of previews uploaded.", "previews",
                 doc_type="sum"),
        _counter(PREVIEWS_DOWNLOADS, "tuist.previews.downloads", "Total number of previews downloaded.", "previews",
                 doc_type="sum"),
        *_storage_specs(),
        _counter(TOKEN_REFRESH_ERRORS, "tuist.authentication.token_refresh.errors",
                 "Total number of token refresh errors.",
                 "authentication", "cli_version", "reason", allowed={"reason": TOKEN_REFRESH_REASONS}),
        _gauge(PROJECTS, "tuist.projects", "Total number of projects.", "projects"),
        _gauge(ORGANIZATIONS, "tuist.accounts.organizations", "Total number of organizations.", "accounts"),
        _gauge(USERS, "tuist.accounts.users", "Total number of users.", "accounts"),
        _gauge(REPO_CHECKOUT_QUEUE, "tuist.repo.pool.checkout_queue.length",
               "Database queries queued waiting for a connection from the pool.", "database", "pool"),
        _gauge(REPO_READY, "tuist.repo.pool.ready_connections", "Idle database connections ready to be checked out.",
               "database", "pool"),
        _counter(REPO_CONNECTED, "tuist.repo.pool.db_connection.connected",
                 "Database connections established.", "database",
                 "pool"),
        _counter(REPO_DISCONNECTED, "tuist.repo.pool.db_connection.disconnected",
                 "Database connections closed or invalidated.",
                 "database", "pool"),
        *_http_specs(),
        # Project-owned metrics beyond the doc.
        _histogram(REPO_QUERY_DURATION, "tuist.repo.query.duration",
                   "Duration of database statements in milliseconds, by statement kind (the Ecto plugin's "
                   "query time counterpart).", "database", "pool", "statement", unit="ms", buckets=DB_MS,
                   allowed={"statement": STATEMENT_KINDS}, documented=False),
        _gauge(DB_CONNECTIONS_ACTIVE, "tuist.repo.pool.active_connections",
               "Database connections currently checked out of the pool.", "database",
               "pool", documented=False),
        _counter(INBOUND_REQUESTS, "tuist.inbound.requests",
                 "Inbound HTTP requests by route template and status.", "inbound",
                 "method", "route", "status", documented=False),
        _histogram(INBOUND_DURATION, "tuist.inbound.request.duration",
                   "Inbound HTTP request duration in seconds.", "inbound",
                   "method", "route", unit="s", buckets=WEB_SECONDS, documented=False),
        _counter(ANALYTICS_DROPPED, "tuist.analytics.events.dropped",
                 "Product analytics events dropped before reaching PostHog.", "analytics", "reason",
                 allowed={"reason": ANALYTICS_DROP_REASONS}, documented=False),
        _counter(OVERFLOW_METRIC, "tuist.telemetry.overflow.measurements",
                 "Measurements recorded into a metric's overflow series because it reached its label-set "
                 "limit.", "telemetry", "metric", documented=False),
    ]
    names = [s.name for s in specs] + [s.instrument for s in specs]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"duplicate metric names in the catalogue: {sorted(duplicates)}")
    return tuple(specs)


CATALOGUE: tuple[MetricSpec, ...] = _build()
BY_NAME: Mapping[str, MetricSpec] = MappingProxyType({s.name: s for s in CATALOGUE})
BY_INSTRUMENT: Mapping[str, MetricSpec] = MappingProxyType({s.instrument: s for s in CATALOGUE})
# The instrumentation scope of the package's meter: the catalogue's instruments are created through it.
SCOPE_NAME = "tuist.telemetry"
# The label every overflow series carries instead of its own (OpenTelemetry's convention).
OVERFLOW_LABEL = "otel_metric_overflow"


# --- Runtime families -----------------------------------------------------------------------------------------
# Per-process readings (telemetry/instrumentation/runtime.py): observable OpenTelemetry instruments on the SDK,
# outside the registry, so in multi-process mode each process keeps its own series (with a ``pid`` label) rather
# than a sum over workers.


class Observable(enum.Enum):
    """The OpenTelemetry observable instrument a runtime family is read through."""

    COUNTER = "counter"
    UP_DOWN_COUNTER = "up_down_counter"
    GAUGE = "gauge"


@dataclass(frozen=True)
class RuntimeSpec:
    """One runtime family. ``name`` is the family on /metrics: the standard OpenTelemetry-to-Prometheus name of
    ``instrument`` and ``unit`` (tests/test_runtime.py checks it). ``attributes`` are the instrument's attribute
    keys (``cpu.mode`` is the label ``cpu_mode``). ``prometheus_client`` marks the six families named, typed and
    described exactly as prometheus_client's ``ProcessCollector`` exposes them, which existing Python dashboards
    query."""

    name: str
    observable: Observable
    help: str
    instrument: str
    unit: str = ""
    attributes: tuple[str, ...] = ()
    prometheus_client: bool = False

    @property
    def kind(self) -> Kind:
        return Kind.COUNTER if self.observable is Observable.COUNTER else Kind.GAUGE


PROCESS_CPU_TIME = "process_cpu_time_seconds_total"
PROCESS_MEMORY_USAGE = "process_memory_usage_bytes"
PROCESS_OPEN_FILE_DESCRIPTORS = "process_open_file_descriptor_count"
PROCESS_THREADS = "process_thread_count"
CPYTHON_GC_COLLECTIONS = "cpython_gc_collections_total"
CPYTHON_GC_COLLECTED = "cpython_gc_collected_objects_total"
PROCESS_UPTIME = "process_uptime_seconds"
APPLICATION_INFO = "application_info"
APPLICATION_DEPENDENCY_INFO = "application_dependency_info"
# prometheus_client's ProcessCollector names.
PROCESS_START_TIME = "process_start_time_seconds"
PROCESS_RESIDENT_MEMORY = "process_resident_memory_bytes"
PROCESS_VIRTUAL_MEMORY = "process_virtual_memory_bytes"
PROCESS_CPU_SECONDS = "process_cpu_seconds_total"
PROCESS_OPEN_FDS = "process_open_fds"
PROCESS_MAX_FDS = "process_max_fds"
# Attribute keys of the runtime families.
CPU_MODE = "cpu.mode"
GC_GENERATION = "cpython.gc.generation"
DEPENDENCY_NAME = "name"
DEPENDENCY_VERSION = "version"

_O = Observable
RUNTIME: tuple[RuntimeSpec, ...] = (
    RuntimeSpec(PROCESS_CPU_TIME, _O.COUNTER, "CPU seconds used by this process, by mode.", "process.cpu.time",
                "s", (CPU_MODE,)),
    RuntimeSpec(PROCESS_MEMORY_USAGE, _O.UP_DOWN_COUNTER, "Resident memory of this process.",
                "process.memory.usage", "By"),
    RuntimeSpec(PROCESS_OPEN_FILE_DESCRIPTORS, _O.UP_DOWN_COUNTER, "Open file descriptors of this process.",
                "process.open_file_descriptor.count", "{file_descriptor}"),
    RuntimeSpec(PROCESS_THREADS, _O.UP_DOWN_COUNTER, "OS threads of this process.", "process.thread.count",
                "{thread}"),
    RuntimeSpec(CPYTHON_GC_COLLECTIONS, _O.COUNTER, "Garbage collector runs, by generation.",
                "cpython.gc.collections", "{collection}", (GC_GENERATION,)),
    RuntimeSpec(CPYTHON_GC_COLLECTED, _O.COUNTER, "Objects collected by the garbage collector, by generation.",
                "cpython.gc.collected_objects", "{object}", (GC_GENERATION,)),
    RuntimeSpec(PROCESS_START_TIME, _O.GAUGE, "Start time of the process since unix epoch in seconds.",
                "process.start_time", "s", prometheus_client=True),
    RuntimeSpec(PROCESS_UPTIME, _O.GAUGE, "Seconds since this process started.", "process.uptime", "s"),
    RuntimeSpec(PROCESS_RESIDENT_MEMORY, _O.GAUGE, "Resident memory size in bytes.", "process.resident_memory",
                "By", prometheus_client=True),
    RuntimeSpec(PROCESS_VIRTUAL_MEMORY, _O.GAUGE, "Virtual memory size in bytes.", "process.virtual_memory", "By",
                prometheus_client=True),
    RuntimeSpec(PROCESS_CPU_SECONDS, _O.COUNTER, "Total user and system CPU time spent in seconds.",
                "process.cpu_seconds", "s", prometheus_client=True),
    RuntimeSpec(PROCESS_OPEN_FDS, _O.GAUGE, "Number of open file descriptors.", "process.open_fds",
                prometheus_client=True),
    RuntimeSpec(PROCESS_MAX_FDS, _O.GAUGE, "Maximum number of open file descriptors.", "process.max_fds",
                prometheus_client=True),
    RuntimeSpec(APPLICATION_INFO, _O.GAUGE, "Service, Python and build versions (value 1).", "application.info"),
    RuntimeSpec(APPLICATION_DEPENDENCY_INFO, _O.GAUGE, "Versions of key dependencies (value 1).",
                "application.dependency.info", attributes=(DEPENDENCY_NAME, DEPENDENCY_VERSION)),
)
RUNTIME_BY_NAME: Mapping[str, RuntimeSpec] = MappingProxyType({s.name: s for s in RUNTIME})


def _check_runtime() -> None:
    owned = {n for s in CATALOGUE for n in (*s.sample_names, s.name, s.instrument)}
    names = [s.name for s in RUNTIME] + [s.instrument for s in RUNTIME]
    clashes = {n for n in names if names.count(n) > 1 or n in owned}
    if clashes:
        raise ValueError(f"runtime family names used twice or by the catalogue: {sorted(clashes)}")


_check_runtime()


def spec(name: str) -> MetricSpec:
    """The spec for ``name``; a ``KeyError`` that lists close names when it is not in the catalogue."""
    try:
        return BY_NAME[name]
    except KeyError:
        close = [n for n in BY_NAME if name.rsplit("_", 1)[0] in n][:5]
        raise KeyError(f"{name!r} is not in the catalogue" + (f"; did you mean {close}?" if close else "")) from None


def documented() -> tuple[MetricSpec, ...]:
    """The families the Tuist doc lists, in the doc's order."""
    return tuple(s for s in CATALOGUE if s.documented)


def documented_names() -> tuple[str, ...]:
    """The 53 sample names exactly as the doc writes them."""
    return tuple(n for s in documented() for n in s.doc_names)
