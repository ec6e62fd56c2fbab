"""The service's settings: one frozen object, built like ``telemetry.config`` (argument > env var > default).

``FIELDS`` is the one place that names the service's environment variables; a bad value fails at startup with
a message naming the variable. Telemetry's own variables (``TUIST_METRICS_PORT``, ``OTEL_*``) stay in
``telemetry.config``; the service passes its ``--metrics-port`` through to ``telemetry.setup()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from telemetry.catalogue import REPO_DISCONNECTED
from telemetry.config import ENV as TELEMETRY_ENV
from telemetry.config import (
    EnvSettings,
    Field,
    parse_bool,
    parse_port,
    parse_positive_float,
    parse_positive_int,
    parse_text,
    parse_url,
)


def _rate(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 1:
        raise ValueError("expected a probability from 0 to 1")
    return value


def _database_url(raw: str) -> str:
    if raw and not raw.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:", "postgres:")):
        raise ValueError("expected a sqlite:/// or postgresql:// URL")
    if raw.startswith("postgres"):
        try:
            urlsplit(raw).port  # noqa: B018 (urlsplit checks the port only when it is read)
        except ValueError:
            raise ValueError("the port is not a number from 0 to 65535") from None
    return raw


def _redis_url(raw: str) -> str:
    if raw and not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected a redis:// URL")
    return raw


def _hex(raw: str) -> str:
    try:
        bytes.fromhex(raw)
    except ValueError:
        raise ValueError("expected hexadecimal digits") from None
    return raw


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("expected debug, info, warning or error")
    return level


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("expected a whole number of at least 0")
    return value


FIELDS: tuple[Field, ...] = (
    Field("host", "SERVICE_HOST", parse_text, "Address the service binds to."),
    Field("port", "SERVICE_PORT", parse_port,
          f"Port of the service (its /metrics port is {TELEMETRY_ENV['metrics_port']})."),
    Field("workers", "SERVICE_WORKERS", parse_positive_int,
          "Worker processes (uvicorn workers); above 1, telemetry runs in multi-process mode with its directory "
          "in <data dir>/metrics-multiproc unless TUIST_METRICS_MULTIPROCESS_DIR is set."),
    Field("data_dir", "SERVICE_DATA_DIR", parse_text,
          "Where the embedded SQLite database, the artifact store and the node-local cache live."),
    Field("database_url", "DATABASE_URL", _database_url,
          "Database URL: sqlite:///path or postgresql://user@host/db (default: SQLite in the data dir)."),
    Field("db_pool_size", "SERVICE_DB_POOL_SIZE", parse_positive_int, "Connections the database pool keeps."),
    Field("db_max_overflow", "SERVICE_DB_MAX_OVERFLOW", _non_negative_int,
          "Extra connections the pool opens under load and closes when they are returned."),
    Field("db_pool_recycle", "SERVICE_DB_POOL_RECYCLE_SECONDS", parse_positive_float,
          "Age after which a pooled connection is closed and replaced at its next checkout, as behind a proxy that "
          f"drops old connections (each one counts in {REPO_DISCONNECTED})."),
    Field("redis_url", "REDIS_URL", _redis_url,
          "Redis URL (redis://host:port/0); when set, readiness PINGs it and dashboard stats are cached there."),
    Field("sentry_dsn", "SENTRY_DSN", parse_text, "Sentry DSN; unhandled errors are reported there when set.",
          secret=True),
    Field("environment", "SERVICE_ENVIRONMENT", parse_text, "Deployment environment name (Sentry, logs)."),
    Field("public_url", "SERVICE_PUBLIC_URL", parse_url,
          "Base URL presigned artifact URLs point at (default: http://<host>:<port>)."),
    Field("failure_rate", "SERVICE_FAILURE_RATE", _rate,
          "Probability (0..1) that an /api route fails with 500, to exercise error alerts."),
    Field("traffic", "SERVICE_TRAFFIC", parse_bool, "Run the built-in replayer of CLI traffic."),
    Field("traffic_workers", "SERVICE_TRAFFIC_WORKERS", parse_positive_int, "Concurrent replayer clients."),
    Field("traffic_interval", "SERVICE_TRAFFIC_INTERVAL_SECONDS", parse_positive_float,
          "Pause of each replayer client between two rounds of traffic."),
    Field("health_timeout", "SERVICE_HEALTH_TIMEOUT_SECONDS", parse_positive_float,
          "Timeout of each readiness check (database, Redis)."),
    Field("node_cache_entries", "SERVICE_NODE_CACHE_ENTRIES", parse_positive_int,
          "Artifacts the node-local cache tier keeps before evicting the least recently used."),
    Field("log_level", "SERVICE_LOG_LEVEL", _log_level, "debug, info, warning or error."),
    Field("worker_store_secret", "SERVICE_WORKER_STORE_SECRET", _hex,
          "Set by python -m service for its workers (hex): the key that signs presigned artifact URLs, shared "
          "so that any worker accepts a URL another signed.", secret=True),
)
ENV: Mapping[str, str] = {f.attr: f.env for f in FIELDS}


@dataclass(frozen=True, repr=False)
class ServiceSettings(EnvSettings):
    """Everything the service reads from its environment. Build with ``ServiceSettings.from_env()``."""

    FIELDS: ClassVar[tuple[Field, ...]] = FIELDS

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    data_dir: str = "var"
    database_url: str = ""
    db_pool_size: int = 5
    db_max_overflow: int = 10
    # Short, so the disconnect counter moves within seconds of `make run` (overflow closes need > 5 concurrent
    # checkouts, which the replayer's traffic reaches only sometimes); a production pool would use minutes.
    db_pool_recycle: float = 3.0
    redis_url: str = ""
    sentry_dsn: str = ""
    environment: str = "development"
    public_url: str = ""
    failure_rate: float = 0.0
    traffic: bool = True
    traffic_workers: int = 2
    traffic_interval: float = 1.0
    health_timeout: float = 1.0
    node_cache_entries: int = 64
    log_level: str = "INFO"
    worker_store_secret: str = ""

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def resolved_database_url(self) -> str:
        """DATABASE_URL with the driver this service uses (psycopg 3), or the embedded SQLite file."""
        url = self.database_url or f"sqlite:///{(self.data_path / 'service.db').resolve()}"
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix):]
        return url

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def store_url(self) -> str:
        return (self.public_url or self.base_url).rstrip("/")

