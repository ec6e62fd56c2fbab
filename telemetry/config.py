"""Settings: one frozen object, built from arguments, then environment variables, then defaults.

Every environment variable the package reads is declared once, in ``FIELDS``; ``Settings.from_env`` parses
them, the README's configuration table is generated from them, and a bad value fails at startup with a message
naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self


class SettingsError(ValueError):
    """A setting has a value the package cannot use; the message names the setting."""


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _port(raw: str) -> int:
    port = int(raw)
    if not 0 <= port <= 65535:
        raise ValueError("expected a port number from 0 to 65535")
    return port


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("expected a whole number of at least 1")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("expected a number above 0")
    return value


def _path(raw: str) -> str:
    if not raw.startswith("/"):
        raise ValueError("expected a path starting with /")
    return raw


def _basic_auth(raw: str) -> str:
    if raw and ":" not in raw:
        raise ValueError("expected user:password")
    return raw


def _limits(raw: str) -> Mapping[str, int]:
    """``name=N,name=N``: per-metric label-set limits."""
    from telemetry.catalogue import spec

    limits: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, number = item.partition("=")
        if not sep:
            raise ValueError(f"expected name=N, got {item!r}")
        spec(name.strip())  # raises KeyError naming the metric
        limits[name.strip()] = _positive_int(number)
    return limits


def _text(raw: str) -> str:
    return raw


def _catalogue_labels(raw: str) -> str:
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


def _section_rules(raw: str) -> str:
    """``/prefix=section,...``: checked here, parsed by ``telemetry.analytics.sections``."""
    for item in filter(None, (part.strip() for part in raw.split(","))):
        prefix, sep, section = item.partition("=")
        if not sep or not prefix.strip().startswith("/") or not section.strip():
            raise ValueError(f"expected /prefix=section, got {item!r}")
    return raw


def _names(raw: str) -> str:
    """A comma-separated list of names (kept as text; split where used)."""
    if any(not part.strip() for part in raw.split(",")) and raw.strip():
        raise ValueError("expected comma-separated names without empty entries")
    return raw


@dataclass(frozen=True)
class Field:
    """One setting: its attribute, its environment variable, its parser and what it is for."""

    attr: str
    env: str
    parse: Callable[[str], Any]
    help: str


# The single place that names environment variables. Standard OpenTelemetry variables keep their names.
FIELDS: tuple[Field, ...] = (
    Field("sdk_disabled", "OTEL_SDK_DISABLED", _bool, "Disable all telemetry: setup() starts nothing."),
    Field("service_name", "OTEL_SERVICE_NAME", _text, "service.name of the resource."),
    Field("resource_attributes", "OTEL_RESOURCE_ATTRIBUTES", _text,
          "Extra resource attributes, key=value,key=value (read by the OpenTelemetry SDK)."),
    Field("service_version", "TUIST_SERVICE_VERSION", _text, "service.version of the resource and info metric."),
    Field("git_sha", "TUIST_GIT_SHA", _text, "Git commit of the running build, shown on the info metric."),
    Field("metrics_host", "TUIST_METRICS_HOST", _text, "Address the /metrics endpoint binds to."),
    Field("metrics_port", "TUIST_METRICS_PORT", _port, "Port of the /metrics endpoint (0 picks a free one)."),
    Field("metrics_path", "TUIST_METRICS_PATH", _path, "Path of the metrics endpoint."),
    Field("metrics_bearer_token", "TUIST_METRICS_BEARER_TOKEN", _text,
          "When set, /metrics requires Authorization: Bearer <token>."),
    Field("metrics_basic_auth", "TUIST_METRICS_BASIC_AUTH", _basic_auth,
          "When set (user:password), /metrics requires HTTP basic auth."),
    Field("metrics_request_timeout", "TUIST_METRICS_REQUEST_TIMEOUT", _positive_float,
          "Seconds a /metrics client has to send a complete request head (and body) before it is disconnected."),
    Field("metrics_idle_timeout", "TUIST_METRICS_IDLE_TIMEOUT", _positive_float,
          "Seconds an idle keep-alive connection to /metrics stays open."),
    Field("metrics_max_connections", "TUIST_METRICS_MAX_CONNECTIONS", _positive_int,
          "Open /metrics connections at most; further ones get 503 with Retry-After and are closed."),
    Field("cardinality_limit", "TUIST_METRICS_CARDINALITY_LIMIT", _positive_int,
          "Label sets kept per metric before new ones go to the overflow series."),
    Field("cardinality_limits", "TUIST_METRICS_CARDINALITY_LIMITS", _limits,
          "Per-metric limits overriding the default: name=N,name=N."),
    Field("drop_labels", "TUIST_METRICS_DROP_LABELS", _catalogue_labels,
          "Label names dropped from every catalogue metric that has them, comma-separated (series that differed "
          "only in them merge), e.g. object_key,upload_id,part_number."),
    Field("target_info", "TUIST_METRICS_TARGET_INFO", _bool,
          "Expose the resource as a target_info series."),
    Field("scope_labels", "TUIST_METRICS_SCOPE_LABELS", _bool,
          "Add otel_scope_name/otel_scope_version labels to OpenTelemetry (non-catalogue) series."),
    Field("runtime_metrics", "TUIST_RUNTIME_METRICS", _bool, "Collect process and Python runtime metrics."),
    Field("multiprocess_dir", "TUIST_METRICS_MULTIPROCESS_DIR", _text,
          "Multi-process mode: a directory (local, writable, shared by every worker of one host) where each "
          "process records into its own file; /metrics then serves all of them merged."),
    Field("multiprocess_refresh_seconds", "TUIST_METRICS_MULTIPROCESS_REFRESH_SECONDS", _positive_float,
          "In multi-process mode, how often each process writes its gauges and its own runtime metrics."),
    Field("shutdown_timeout", "TUIST_METRICS_SHUTDOWN_TIMEOUT", _positive_float,
          "Most seconds shutdown() (and interpreter exit) waits for the metric exporters' final export."),
    Field("gauge_refresh_seconds", "TUIST_METRICS_GAUGE_REFRESH_SECONDS", _positive_float,
          "How long the projects/accounts gauges' values are reused before the callback runs again."),
    Field("posthog_api_key", "TUIST_POSTHOG_API_KEY", _text,
          "PostHog project API key; analytics are on only when this and TUIST_POSTHOG_URL are both set."),
    Field("posthog_url", "TUIST_POSTHOG_URL", _text, "PostHog API endpoint URL, e.g. https://eu.i.posthog.com."),
    Field("posthog_sections", "TUIST_POSTHOG_SECTIONS", _section_rules,
          "Route prefix rules for the page_section property, prefix=section,...; the longest matching prefix "
          "wins, unmatched routes are marketing."),
    Field("posthog_deny_properties", "TUIST_POSTHOG_DENY_PROPERTIES", _names,
          "Event and person property names never sent to PostHog, comma-separated."),
    Field("posthog_queue_size", "TUIST_POSTHOG_QUEUE_SIZE", _positive_int,
          "Analytics events buffered in memory; further events are dropped and counted."),
    Field("posthog_request_timeout", "TUIST_POSTHOG_REQUEST_TIMEOUT", _positive_float,
          "Seconds one upload to PostHog may take before it counts as failed."),
    Field("posthog_shutdown_timeout", "TUIST_POSTHOG_SHUTDOWN_TIMEOUT", _positive_float,
          "Most seconds shutdown waits to flush queued analytics events."),
    Field("posthog_script_url", "TUIST_POSTHOG_SCRIPT_URL", _text,
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
                    raise SettingsError(f"{f.env}={env[f.env]!r} is not valid: {exc}") from None
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check values given as arguments the same way environment values are checked; subclasses add
        rules that involve several fields."""
        for f in self.FIELDS:
            value = getattr(self, f.attr)
            if f.parse is _text or not isinstance(value, str | bool | int | float):
                continue
            try:
                # An argument may be given as text, like the variable ("false", "9200"): parse it, so that
                # target_info="false" is False rather than a truthy string. Numbers are range-checked.
                parsed = f.parse(value if isinstance(value, str) else str(value).lower())
            except (ValueError, KeyError) as exc:
                raise SettingsError(f"{f.attr} (env {f.env}) = {value!r} is not valid: {exc}") from None
            if isinstance(value, str) and not isinstance(parsed, str):
                object.__setattr__(self, f.attr, parsed)

    def replace(self, **changes: Any) -> Self:
        settings = dataclasses.replace(self, **changes)  # type: ignore[type-var]
        settings.validate()
        return settings


@dataclass(frozen=True)
class Settings(EnvSettings):
    """Everything ``setup()`` needs. Build with ``Settings.from_env(**overrides)``."""

    FIELDS: ClassVar[tuple[Field, ...]] = FIELDS

    sdk_disabled: bool = False
    service_name: str = ""
    resource_attributes: str = ""
    service_version: str = ""
    git_sha: str = ""
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9091
    metrics_path: str = "/metrics"
    metrics_bearer_token: str = field(default="", repr=False)
    metrics_basic_auth: str = field(default="", repr=False)
    metrics_request_timeout: float = 10.0
    metrics_idle_timeout: float = 30.0
    metrics_max_connections: int = 64
    cardinality_limit: int = 2000
    cardinality_limits: Mapping[str, int] = field(default_factory=dict)
    drop_labels: str = ""
    target_info: bool = True
    scope_labels: bool = False
    runtime_metrics: bool = True
    multiprocess_dir: str = ""
    multiprocess_refresh_seconds: float = 5.0
    shutdown_timeout: float = 5.0
    gauge_refresh_seconds: float = 30.0
    posthog_api_key: str = field(default="", repr=False)
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
                _port(str(self.metrics_port))
            except ValueError as exc:
                raise SettingsError(f"metrics_port (env {ENV['metrics_port']}): {exc}") from None
        if self.metrics_bearer_token and self.metrics_basic_auth:
            raise SettingsError(f"set either {ENV['metrics_bearer_token']} or {ENV['metrics_basic_auth']}, "
                                "not both")


def markdown_table() -> str:
    """The README's configuration table."""
    defaults = Settings()
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for f in FIELDS:
        default = getattr(defaults, f.attr)
        shown = "" if default in ("", {}) else f"`{str(default).lower() if isinstance(default, bool) else default}`"
        rows.append(f"| `{f.env}` | {shown} | {f.help} |")
    return "\n".join(rows)
