"""``python -m service`` (what ``make run`` runs): the reference service on 127.0.0.1:8080, /metrics on :9091,
and the traffic replayer. ``--port``, ``--metrics-port``, ``--host``, ``--workers`` and ``--no-traffic`` override
the environment (SERVICE_PORT, TUIST_METRICS_PORT, SERVICE_HOST, SERVICE_WORKERS, SERVICE_TRAFFIC).

With more than one worker, uvicorn runs that many worker processes (``service.app:create_worker_app``) and
telemetry runs in multi-process mode: each worker records into its own file in
``<data dir>/metrics-multiproc`` (emptied at start; or TUIST_METRICS_MULTIPROCESS_DIR) and listens on the
metrics port beside the others; any of them answers /metrics for all. The replayer runs in this process."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from service.settings import ENV
from telemetry.config import ENV as TELEMETRY_ENV


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", default=None, help=f"address to bind (default: {ENV['host']} or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help=f"service port (default: {ENV['port']} or 8080)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help=f"/metrics port (default: {TELEMETRY_ENV['metrics_port']} or 9091)")
    parser.add_argument("--data-dir", default=None, help=f"data directory (default: {ENV['data_dir']} or var)")
    parser.add_argument("--workers", type=int, default=None,
                        help=f"worker processes (default: {ENV['workers']} or 1)")
    parser.add_argument("--no-traffic", action="store_true", help="do not start the traffic replayer")
    return parser.parse_args(argv)


def _replayer(settings: Any, credentials: Any) -> Any:
    """The CLI traffic replayer, unless traffic is off."""
    from service.replayer import Replayer

    return Replayer(settings.base_url, credentials, workers=settings.traffic_workers,
                    interval=settings.traffic_interval) if settings.traffic else None


def _ready(settings: Any, metrics_url: str, replayer: Any, extra: str = "") -> None:
    """Print where everything is, then start the replayer: the service answers now."""
    print(f"service:  {settings.base_url}/  (API docs {settings.base_url}/api/docs)\n{extra}"
          f"metrics:  {metrics_url}\n"
          f"health:   {settings.base_url}/health/ready\n"
          f"traffic:  {'replaying CLI traffic' if replayer else 'off (--no-traffic)'}\n"
          f"data:     {settings.data_path.resolve()}", flush=True)
    if replayer is not None:
        replayer.start()


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import uvicorn
    from sqlalchemy.exc import ArgumentError, OperationalError

    from service.app import create_app
    from service.components import Service
    from service.settings import ENV, ServiceSettings
    from telemetry import logs
    from telemetry.config import SettingsError, redact
    from telemetry.exposition.server import ExpositionError

    overrides: dict[str, Any] = {k: v for k, v in (("host", args.host), ("port", args.port),
                                                   ("data_dir", args.data_dir), ("workers", args.workers))
                                 if v is not None}
    if args.no_traffic:
        overrides["traffic"] = False
    try:
        settings = ServiceSettings.from_env(**overrides)
        logs.configure(settings.log_level)
        # httpx logs every request at INFO; the access log already has one line per request.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        if settings.workers > 1:
            return run_workers(settings, args.metrics_port)
        service = Service.start(settings, metrics_port=args.metrics_port)
    except (SettingsError, ExpositionError) as exc:
        print(f"service: {exc}", file=sys.stderr)
        return 2
    except (OperationalError, ArgumentError) as exc:  # the database named by DATABASE_URL is unusable
        first = str(exc.orig if isinstance(exc, OperationalError) else exc).strip().splitlines()[0]
        # Both the URL and the driver's message (which may quote the URL) lose the password.
        print(redact(f"service: cannot use the database at {ENV['database_url']}="
                     f"{settings.database_url or '(default)'}: {first}"), file=sys.stderr)
        return 2

    config = uvicorn.Config(create_app(service), host=settings.host, port=settings.port, log_config=None,
                            access_log=False, lifespan="off", server_header=False)
    server = uvicorn.Server(config)
    replayer = _replayer(settings, service.credentials)

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if not server.started:
            return
        _ready(settings, str(service.telemetry.metrics_url), replayer)

    threading.Thread(target=announce, name="announce", daemon=True).start()
    # uvicorn re-raises SIGTERM once it has stopped; with the default handler that would end the process
    # before the finally below closes the service (analytics flush, telemetry shutdown). Exit 143 after it.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        server.run()
    finally:
        if replayer is not None:
            replayer.stop()
        service.close()
    if not server.started:
        logging.getLogger("service").error("the service could not start on %s", settings.base_url)
        return 1
    return 0


def run_workers(settings: Any, metrics_port: int | None) -> int:
    """``settings.workers`` uvicorn workers in multi-process mode; the replayer in this process."""
    import os
    import secrets
    import shutil

    import httpx
    import uvicorn

    from service.db import Database, make_engine
    from telemetry.config import Settings as TelemetrySettings

    # The workers build their settings from the environment: hand them this process's (written, never read
    # here: the settings objects read the environment).
    overrides = {} if metrics_port is None else {"metrics_port": metrics_port}
    telemetry_settings = TelemetrySettings.from_env(**overrides)  # a bad TUIST_* setting stops here, not in N workers
    multiprocess_dir = telemetry_settings.multiprocess_dir
    if not multiprocess_dir:
        directory = (settings.data_path / "metrics-multiproc").resolve()
        shutil.rmtree(directory, ignore_errors=True)  # no counts left over from an earlier run
        directory.mkdir(parents=True)
        multiprocess_dir = str(directory)
    os.environ.update({TELEMETRY_ENV["multiprocess_dir"]: multiprocess_dir,
                       TELEMETRY_ENV["metrics_port"]: str(telemetry_settings.metrics_port),
                       ENV["host"]: settings.host, ENV["port"]: str(settings.port),
                       ENV["data_dir"]: settings.data_dir, ENV["traffic"]: "false", ENV["workers"]: "1",
                       ENV["worker_store_secret"]: secrets.token_hex(32)})
    # The database is created and seeded once, here; the replayer signs in with these credentials.
    settings.data_path.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url, pool_size=1, max_overflow=0)
    try:
        db = Database(engine)
        db.create_all()
        credentials = db.seed()
    finally:
        engine.dispose()

    replayer = _replayer(settings, credentials)
    metrics_host = settings.base_url.rsplit(":", 1)[0]
    done = threading.Event()

    def announce() -> None:
        while not done.wait(0.1):
            try:
                if httpx.get(f"{settings.base_url}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                continue
        else:
            return
        _ready(settings, f"{metrics_host}:{telemetry_settings.metrics_port}{telemetry_settings.metrics_path}",
               replayer, f"workers:  {settings.workers}, metrics in {multiprocess_dir}\n")

    announcer = threading.Thread(target=announce, name="announce", daemon=True)
    announcer.start()
    try:
        # uvicorn's supervisor handles SIGTERM and Ctrl-C: it stops the workers (each closes its Service).
        uvicorn.run("service.app:create_worker_app", factory=True, workers=settings.workers, host=settings.host,
                    port=settings.port, log_config=None, access_log=False, server_header=False)
    finally:
        done.set()
        announcer.join(timeout=5)
        if replayer is not None:
            replayer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
