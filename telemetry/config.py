"""Settings: one frozen object, built from arguments, then environment variables, then defaults.

Every environment variable the package reads is declared once, in ``FIELDS``; ``Settings.from_env`` parses
them, the README's configuration table is generated from them, and a bad value fails at startup with a message
naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

# Label value limits (see telemetry.registry.cap_label_value and telemetry.store.Stream), here so the settings
# and the registry share one definition.
LABEL_VALUE_MAX_LENGTH = 256
LABEL_VALUE_MIN_LENGTH = 32  # room for a readable prefix beside the 17-character hash suffix
LABEL_BYTES_PER_SERIES = 128


class SettingsError(ValueError):
    """A setting has a value the package cannot use; the message names the setting."""


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def parse_port(raw: str) -> int:
    port = int(raw)
    if not 0 <= port <= 65535:
        raise ValueError("expected a port number from 0 to 65535")
    return port


def parse_positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("expected a whole number of at least 1")
    return value


def parse_label_length(raw: str) -> int:
    value = int(raw)
    if value < LABEL_VALUE_MIN_LENGTH:
        raise ValueError(f"expected a whole number of at least {LABEL_VALUE_MIN_LENGTH}")
    return value


def parse_positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("expected a number above 0")
    return value


def parse_optional_positive_float(raw: str) -> float | None:
    """A number above 0, or None for an empty value (a variable set to nothing is unset)."""
    return parse_positive_float(raw) if raw.strip() else None


def parse_path(raw: str) -> str:
    if not raw.startswith("/"):
        raise ValueError("expected a path starting with /")
    return raw


def parse_basic_auth(raw: str) -> str:
    if raw and ":" not in raw:
        raise ValueError("expected user:password")
    return raw


def parse_limits(raw: str | Mapping[str, int]) -> Mapping[str, int]:
    """``name=N,name=N`` (or a mapping given as an argument): per-metric label-set limits."""
    from telemetry.catalogue import spec

    items: list[tuple[str, object]]
    if isinstance(raw, Mapping):
        items = [(str(name), value) for name, value in raw.items()]
    else:
        items = []
        for item in filter(None, (part.strip() for part in raw.split(","))):
            name, sep, number = item.partition("=")
            if not sep:
                raise ValueError(f"expected name=N, got {item!r}")
            items.append((name.strip(), number))
    limits: dict[str, int] = {}
    for metric, limit in items:
        spec(metric)  # raises KeyError naming the metric
        if isinstance(limit, bool) or not isinstance(limit, int | str):
            raise ValueError(f"the limit of {metric} must be a whole number, got {limit!r}")
        limits[metric] = parse_positive_int(str(limit))
    return limits


def parse_url(raw: str) -> str:
    """An http(s) URL with a host and, if any, a port in range; empty means unset."""
    if not raw:
        return raw
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https"):
        raise ValueError("expected an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("expected a host after http(s)://")
    try:
        parts.port  # noqa: B018 (urlsplit checks the port only when it is read)
    except ValueError:
        port = parts.netloc.rpartition(":")[2]
        raise ValueError(f"the port {port} is not a port number from 0 to 65535") from None
    return raw


# scheme://user:password@ anywhere in a text (a URL, or an error message quoting one).
_USERINFO_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*):[^/?#\s]*@")


def redact(url_or_value: str) -> str:
    """``url_or_value`` with the password of every URL in it replaced by ``***``
    (``postgresql://qa:pw@host/db`` → ``postgresql://qa:***@host/db``); other text is returned unchanged."""
    return _USERINFO_PASSWORD.sub(r"\1:***@", url_or_value)


def parse_text(raw: str) -> str:
    return raw


def parse_catalogue_labels(raw: str) -> str:
    """Comma-separated label names, each a label of some catalogue metric (kept as text; split where used)."""
    from telemetry.catalogue import CATALOGUE

    known = {label for s in CATALOGUE for label in s.labels}
    names = [part.strip() for part in raw.split(",")]
    if raw.strip() and not all(names):
        raise ValueError("expected comma-separated label names without empty entries")
    unknown = sorted({n for n in names if n and n not in known})
    if unknown:
        raise ValueError(f"{unknown} {'is' if len(unknown) == 1 else 'are'} not a label of any catalogue metric; "
                         f"the catalogue's labels are {sorted(known)}")
    return raw


def parse_section_rules(raw: str) -> str:
    """``/prefix=section,...``: checked here, parsed by ``telemetry.analytics.sections``."""
    for item in filter(None, (part.strip() for part in raw.split(","))):
        prefix, sep, section = item.partition("=")
        if not sep or not prefix.strip().startswith("/") or not section.strip():
            raise ValueError(f"expected /prefix=section, got {item!r}")
    return raw


def parse_names(raw: str) -> str:
    """A comma-separated list of names (kept as text; split where used)."""
    if any(not part.strip() for part in raw.split(",")) and raw.strip():
        raise ValueError("expected comma-separated names without empty entries")
    return raw


EXEMPLAR_FILTERS = ("trace_based", "always_on", "always_off")


def parse_exemplar_filter(raw: str) -> str:
    """One of OpenTelemetry's exemplar filters (any case); empty means the default, trace_based."""
    value = raw.strip().lower() or EXEMPLAR_FILTERS[0]
    if value not in EXEMPLAR_FILTERS:
        raise ValueError(f"expected one of {', '.join(EXEMPLAR_FILTERS)}")
    return value


@dataclass(frozen=True)
class Field:
    """One setting: its attribute, its environment variable, its parser and what it is for."""

    attr: str
    env: str
    parse: Callable[[str], Any]
    help: str
    secret: bool = False  # never shown: repr, logs and error messages say *** instead

    def shown(self, value: Any) -> str:
        """``value`` as it may appear in a log line or an error message."""
        if self.secret:
            return "'***'" if value else "''"
        return repr(redact(value)) if isinstance(value, str) else repr(value)


# The single place that names environment variables. Standard OpenTelemetry variables keep their names.
FIELDS: tuple[Field, ...] = (
    Field("sdk_disabled", "OTEL_SDK_DISABLED", parse_bool, "Disable all telemetry: setup() starts nothing."),
    Field("service_name", "OTEL_SERVICE_NAME", parse_text, "service.name of the resource."),
    Field("resource_attributes", "OTEL_RESOURCE_ATTRIBUTES", parse_text,
          "Extra resource attributes, key=value,key=value (read by the OpenTelemetry SDK)."),
    Field("metrics_exporter", "OTEL_METRICS_EXPORTER", parse_names,
          "Metric exporters beside /metrics, comma-separated: otlp adds the stock OTLP/HTTP reader (the otlp extra)."),
    Field("metrics_exemplar_filter", "OTEL_METRICS_EXEMPLAR_FILTER", parse_exemplar_filter,
          "Which measurements keep an exemplar: trace_based (those under a sampled span), always_on or always_off."),
    Field("otlp_metrics_timeout", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", parse_optional_positive_float,
          "Seconds one OTLP metrics export, retries included, may take (unset: OTEL_EXPORTER_OTLP_TIMEOUT, else "
          "2, shorter than the SDK's 10 so that shutdown stays bounded)."),
    Field("otlp_timeout", "OTEL_EXPORTER_OTLP_TIMEOUT", parse_optional_positive_float,
          "Seconds one OTLP export may take, for every signal without a timeout of its own."),
    Field("traces_exporter", "OTEL_TRACES_EXPORTER", parse_names,
          "Span exporters, comma-separated: none turns trace export off even when an OTLP endpoint is set."),
    Field("otlp_endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT", parse_url,
          "Base URL of the OTLP/HTTP receiver; spans go to its /v1/traces (read by the OpenTelemetry exporters too)."),
    Field("otlp_traces_endpoint", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", parse_url,
          "Full URL spans are sent to, instead of OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces."),
    Field("service_version", "TUIST_SERVICE_VERSION", parse_text, "service.version of the resource and info metric."),
    Field("git_sha", "TUIST_GIT_SHA", parse_text, "Git commit of the running build, shown on the info metric."),
    Field("metrics_host", "TUIST_METRICS_HOST", parse_text, "Address the /metrics endpoint binds to."),
    Field("metrics_port", "TUIST_METRICS_PORT", parse_port, "Port of the /metrics endpoint (0 picks a free one)."),
    Field("metrics_path", "TUIST_METRICS_PATH", parse_path, "Path of the metrics endpoint."),
    Field("metrics_bearer_token", "TUIST_METRICS_BEARER_TOKEN", parse_text,
          "When set, /metrics requires Authorization: Bearer <token>.", secret=True),
    Field("metrics_basic_auth", "TUIST_METRICS_BASIC_AUTH", parse_basic_auth,
          "When set (user:password), /metrics requires HTTP basic auth.", secret=True),
    Field("metrics_request_timeout", "TUIST_METRICS_REQUEST_TIMEOUT", parse_positive_float,
          "Seconds a /metrics client has to send a complete request head (and body) before it is disconnected."),
    Field("metrics_idle_timeout", "TUIST_METRICS_IDLE_TIMEOUT", parse_positive_float,
          "Seconds an idle keep-alive connection to /metrics stays open."),
    Field("metrics_max_connections", "TUIST_METRICS_MAX_CONNECTIONS", parse_positive_int,
          "Open /metrics connections at most; further ones get 503 with Retry-After and are closed."),
    Field("cardinality_limit", "TUIST_METRICS_CARDINALITY_LIMIT", parse_positive_int,
          "Label sets kept per metric before new ones go to the overflow series."),
    Field("cardinality_limits", "TUIST_METRICS_CARDINALITY_LIMITS", parse_limits,
          "Per-metric limits overriding the default: name=N,name=N."),
    Field("label_value_max_length", "TUIST_METRICS_LABEL_VALUE_MAX_LENGTH", parse_label_length,
          "Longest label value kept, in characters; a longer one is cut and ends in ~ and 16 hex digits of its "
          "hash (distinct values stay distinct). At least " f"{LABEL_VALUE_MIN_LENGTH}."),
    Field("label_bytes_per_series", "TUIST_METRICS_LABEL_BYTES_PER_SERIES", parse_positive_int,
          "Label-value bytes a metric's series may take on average: a metric's series take at most this times "
          "its cardinality limit together; new label sets past that go to the overflow series."),
    Field("drop_labels", "TUIST_METRICS_DROP_LABELS", parse_catalogue_labels,
          "Label names dropped from every catalogue metric that has them, comma-separated (series that differed "
          "only in them merge), e.g. object_key,upload_id,part_number."),
    Field("target_info", "TUIST_METRICS_TARGET_INFO", parse_bool,
          "Expose the resource as a target_info series."),
    Field("scope_labels", "TUIST_METRICS_SCOPE_LABELS", parse_bool,
          "Add otel_scope_name/otel_scope_version labels to OpenTelemetry (non-catalogue) series."),
    Field("runtime_metrics", "TUIST_RUNTIME_METRICS", parse_bool, "Collect process and Python runtime metrics."),
    Field("http_server_metrics", "TUIST_METRICS_HTTP_SERVER_METRICS", parse_bool,
          "Keep the OpenTelemetry http.server.* metrics that frameworks and instrumentation libraries (FastAPI's "
          "own, opentelemetry-instrumentation-asgi/-wsgi/-fastapi/-flask/-django) record on the package's "
          "MeterProvider. Off: http_requests_total and http_request_duration_seconds already count the same "
          "requests."),
    Field("multiprocess_dir", "TUIST_METRICS_MULTIPROCESS_DIR", parse_text,
          "Multi-process mode: a directory (local, writable, shared by every worker of one host) where each "
          "process records into its own file; /metrics then serves all of them merged."),
    Field("multiprocess_refresh_seconds", "TUIST_METRICS_MULTIPROCESS_REFRESH_SECONDS", parse_positive_float,
          "In multi-process mode, how often each process writes its gauges and its own runtime metrics."),
    Field("shutdown_timeout", "TUIST_METRICS_SHUTDOWN_TIMEOUT", parse_positive_float,
          "Most seconds shutdown() (and interpreter exit) waits for the metric exporters' final export."),
    Field("gauge_refresh_seconds", "TUIST_METRICS_GAUGE_REFRESH_SECONDS", parse_positive_float,
          "How long the projects/accounts gauges' values are reused before the callback runs again."),
    Field("posthog_api_key", "TUIST_POSTHOG_API_KEY", parse_text,
          "PostHog project API key; analytics are on only when this and TUIST_POSTHOG_URL are both set.",
          secret=True),
    Field("posthog_url", "TUIST_POSTHOG_URL", parse_url, "PostHog API endpoint URL, e.g. https://eu.i.posthog.com."),
    Field("posthog_sections", "TUIST_POSTHOG_SECTIONS", parse_section_rules,
          "Route prefix rules for the page_section property, prefix=section,...; the longest matching prefix "
          "wins, unmatched routes are marketing."),
    Field("posthog_deny_properties", "TUIST_POSTHOG_DENY_PROPERTIES", parse_names,
          "Event and person property names never sent to PostHog, comma-separated."),
    Field("posthog_queue_size", "TUIST_POSTHOG_QUEUE_SIZE", parse_positive_int,
          "Analytics events buffered in memory; further events are dropped and counted."),
    Field("posthog_request_timeout", "TUIST_POSTHOG_REQUEST_TIMEOUT", parse_positive_float,
          "Seconds one upload to PostHog may take before it counts as failed."),
    Field("posthog_shutdown_timeout", "TUIST_POSTHOG_SHUTDOWN_TIMEOUT", parse_positive_float,
          "Most seconds shutdown waits to flush queued analytics events."),
    Field("posthog_script_url", "TUIST_POSTHOG_SCRIPT_URL", parse_url,
          "URL browsers load posthog-js from (default: TUIST_POSTHOG_URL + /static/array.js)."),
)
ENV: Mapping[str, str] = {f.attr: f.env for f in FIELDS}


class EnvSettings:
    """Behaviour shared by frozen settings dataclasses whose fields are declared in a ``FIELDS`` table: built
    from arguments, then environment variables, then defaults; every value checked by its field's parser."""

    FIELDS: ClassVar[tuple[Field, ...]] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Arguments win over environment variables, which win over defaults.

        Raises ``SettingsError`` naming the variable (or argument) whose value is unusable.
        """
        env = os.environ if environ is None else environ
        known = {f.attr for f in cls.FIELDS}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown settings {sorted(unknown)}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for f in cls.FIELDS:
            if f.attr in overrides:
                values[f.attr] = overrides[f.attr]
            elif f.env in env:
                try:
                    values[f.attr] = f.parse(env[f.env])
                except (ValueError, KeyError) as exc:
                    raise SettingsError(f"{f.env}={f.shown(env[f.env])} is not valid: {exc}") from None
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check values given as arguments the same way environment values are checked; subclasses add
        rules that involve several fields."""
        for f in self.FIELDS:
            value = getattr(self, f.attr)
            mapping = isinstance(value, Mapping)
            if f.parse is parse_text or not (mapping or isinstance(value, str | bool | int | float)):
                continue
            try:
                # An argument may be given as text, like the variable ("false", "9200"): parse it, so that
                # target_info="false" is False rather than a truthy string. Numbers are range-checked; a
                # mapping (cardinality_limits={...}) is checked entry by entry, as its variable's text is.
                parsed = f.parse(value if isinstance(value, str) or mapping else str(value).lower())
            except (ValueError, KeyError) as exc:
                raise SettingsError(f"{f.attr} (env {f.env}) = {f.shown(value)} is not valid: {exc}") from None
            if mapping or (isinstance(value, str) and not isinstance(parsed, str)):
                object.__setattr__(self, f.attr, parsed)

    def __repr__(self) -> str:
        # Secret fields show as ***, URLs without their password: a logged settings object leaks nothing.
        shown = ", ".join(f"{f.attr}={f.shown(getattr(self, f.attr))}" for f in self.FIELDS)
        return f"{type(self).__name__}({shown})"

    @classmethod
    def from_environment(cls, attr: str, environ: Mapping[str, str] | None = None) -> bool:
        """Whether the environment sets ``attr``'s variable (an unset one leaves the default)."""
        env = os.environ if environ is None else environ
        return next(f.env for f in cls.FIELDS if f.attr == attr) in env

    def replace(self, **changes: Any) -> Self:
        settings = dataclasses.replace(self, **changes)  # type: ignore[type-var]
        settings.validate()
        return settings


@dataclass(frozen=True, repr=False)
class Settings(EnvSettings):
    """Everything ``setup()`` needs. Build with ``Settings.from_env(**overrides)``."""

    FIELDS: ClassVar[tuple[Field, ...]] = FIELDS

    sdk_disabled: bool = False
    service_name: str = ""
    resource_attributes: str = ""
    metrics_exporter: str = ""
    metrics_exemplar_filter: str = EXEMPLAR_FILTERS[0]
    otlp_metrics_timeout: float | None = None  # unset: otlp_timeout, else telemetry.export's default
    otlp_timeout: float | None = None
    traces_exporter: str = ""
    otlp_endpoint: str = ""
    otlp_traces_endpoint: str = ""
    service_version: str = ""
    git_sha: str = ""
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9091
    metrics_path: str = "/metrics"
    metrics_bearer_token: str = ""
    metrics_basic_auth: str = ""
    metrics_request_timeout: float = 10.0
    metrics_idle_timeout: float = 30.0
    metrics_max_connections: int = 64
    cardinality_limit: int = 2000
    cardinality_limits: Mapping[str, int] = field(default_factory=dict)
    label_value_max_length: int = LABEL_VALUE_MAX_LENGTH
    label_bytes_per_series: int = LABEL_BYTES_PER_SERIES
    drop_labels: str = ""
    target_info: bool = True
    scope_labels: bool = False
    runtime_metrics: bool = True
    http_server_metrics: bool = False
    multiprocess_dir: str = ""
    multiprocess_refresh_seconds: float = 5.0
    shutdown_timeout: float = 5.0
    gauge_refresh_seconds: float = 30.0
    posthog_api_key: str = ""
    posthog_url: str = ""
    posthog_sections: str = "/api/docs=api-docs,/docs/api=api-docs,/dashboard=dashboard"
    posthog_deny_properties: str = ""
    posthog_queue_size: int = 10_000
    posthog_request_timeout: float = 3.0
    posthog_shutdown_timeout: float = 5.0
    posthog_script_url: str = ""

    def validate(self) -> None:
        super().validate()
        if isinstance(self.metrics_port, int):
            try:
                parse_port(str(self.metrics_port))
            except ValueError as exc:
                raise SettingsError(f"metrics_port (env {ENV['metrics_port']}): {exc}") from None
        if self.metrics_bearer_token and self.metrics_basic_auth:
            raise SettingsError(f"set either {ENV['metrics_bearer_token']} or {ENV['metrics_basic_auth']}, "
                                "not both")


def markdown_table(settings: type[EnvSettings] = Settings) -> str:
    """The configuration table of a settings class: the README's (``Settings``), docs/service.md's
    (``service.settings.ServiceSettings``)."""
    defaults = settings()
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for f in settings.FIELDS:
        default = getattr(defaults, f.attr)
        unset = default is None or default in ("", {})
        shown = "" if unset else f"`{str(default).lower() if isinstance(default, bool) else default}`"
        rows.append(f"| `{f.env}` | {shown} | {f.help} |")
    return "\n".join(rows)
