"""The running parts of the service and how they are put together: telemetry, tracing, database, artifact
store, node-local cache, the instrumented httpx client, Redis, health checks and analytics.

``Service.start(settings)`` builds them in dependency order (telemetry first, so every later part records into
it) and ``close()`` stops them in reverse. The web layer (``service.app``) only reads from a ``Service``.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any

import httpx

import telemetry
from service.db import Credentials, Database, make_engine, ping
from service.settings import ServiceSettings
from service.storage import ArtifactStore, NodeCache
from telemetry import Recorders, Telemetry
from telemetry.analytics import Analytics
from telemetry.analytics import User as AnalyticsUser
from telemetry.config import Settings as TelemetrySettings
from telemetry.health import Health
from telemetry.instrumentation.httpx import instrument_httpx
from telemetry.instrumentation.sqlalchemy import instrument_sqlalchemy
from telemetry.tracing import Tracing, setup_tracing

_log = logging.getLogger("service")

SERVICE_NAME = "tuist-reference-service"
POOL_NAME = "default"


@dataclass
class Service:
    settings: ServiceSettings
    telemetry: Telemetry
    tracing: Tracing
    db: Database
    store: ArtifactStore
    node_cache: NodeCache
    http: httpx.Client
    health: Health
    analytics: Analytics
    redis: Any = None  # redis.Redis when REDIS_URL is set
    credentials: list[Credentials] = field(default_factory=list)
    random: random.Random = field(default_factory=random.Random)
    _closers: list[Any] = field(default_factory=list)

    @property
    def recorders(self) -> Recorders:
        return self.telemetry.recorders

    @classmethod
    def start(cls, settings: ServiceSettings, *, metrics_port: int | None = None,
              tracing: Tracing | None = None, store_secret: bytes | None = None) -> Service:
        """Start telemetry and every component. ``metrics_port`` overrides TUIST_METRICS_PORT;
        ``store_secret`` signs presigned URLs (workers of one service share it; default: a fresh one)."""
        overrides: dict[str, Any] = {}
        if metrics_port is not None:
            overrides["metrics_port"] = metrics_port
        if not TelemetrySettings.from_environment("metrics_host"):
            overrides["metrics_host"] = settings.host  # a dev service keeps /metrics on its own interface
        if not TelemetrySettings.from_environment("service_name"):
            overrides["service_name"] = SERVICE_NAME
        running = telemetry.setup(**overrides)
        closers: list[Any] = [telemetry.shutdown]
        try:
            if tracing is None:
                tracing = setup_tracing(service_name=running.settings.service_name or SERVICE_NAME,
                                        service_version=running.settings.service_version,
                                        sentry_dsn=settings.sentry_dsn, sentry_environment=settings.environment,
                                        disabled=running.settings.sdk_disabled, settings=running.settings)
                closers.append(tracing.shutdown)
            return cls._build(settings, running, tracing, closers, store_secret)
        except BaseException:
            for close in reversed(closers):
                close()
            raise

    @classmethod
    def _build(cls, settings: ServiceSettings, running: Telemetry, tracing: Tracing,
               closers: list[Any], store_secret: bytes | None = None) -> Service:
        data = settings.data_path
        data.mkdir(parents=True, exist_ok=True)
        common: dict[str, Any] = {"registry": running.registry, "meter_provider": running.meter_provider,
                                  "tracer_provider": tracing.provider}

        engine = make_engine(settings.resolved_database_url, pool_size=settings.db_pool_size,
                             max_overflow=settings.db_max_overflow, pool_recycle=settings.db_pool_recycle)
        closers.append(engine.dispose)
        instrument_sqlalchemy(engine, pool_name=POOL_NAME, **common)
        db = Database(engine)
        db.create_all()
        credentials = db.seed()
        running.recorders.accounts.register(db.counts, refresh_seconds=2.0)
        closers.append(running.recorders.accounts.unregister)

        # The store's presigned URLs point back at this service's /_store routes, fetched over HTTP like S3.
        http = httpx.Client(timeout=httpx.Timeout(10.0, connect=2.0),
                            limits=httpx.Limits(max_connections=8, max_keepalive_connections=4))
        closers.append(http.close)
        instrument_httpx(http, **common)
        store = ArtifactStore(data / "store", base_url=settings.store_url, storage=running.recorders.storage,
                              secret=store_secret)
        node_cache = NodeCache(data / "node-cache", settings.node_cache_entries)

        health = Health(timeout=settings.health_timeout)
        health.add("database", lambda: ping(engine))
        redis_client = None
        if settings.redis_url:
            import redis

            redis_client = redis.Redis.from_url(settings.redis_url, socket_timeout=settings.health_timeout,
                                                socket_connect_timeout=settings.health_timeout)
            closers.append(redis_client.close)
            health.add("redis", redis_client.ping)

        analytics = Analytics.from_settings(running.settings, registry=running.registry)
        closers.append(analytics.shutdown)
        return cls(settings, running, tracing, db, store, node_cache, http, health, analytics, redis_client,
                   credentials, _closers=closers)

    def analytics_user(self, user_id: int, email: str, handle: str, project: str = "") -> AnalyticsUser:
        organization = project.split("/", 1)[0] if project and not project.startswith(f"{handle}/") else ""
        return AnalyticsUser(id=user_id, email=email, account_name=handle, organization=organization,
                             project=project)

    def close(self) -> None:
        for close in reversed(self._closers):
            try:
                close()
            except Exception:
                _log.exception("shutdown step failed")
        self._closers.clear()
