"""``python -m service`` (what ``make run`` runs): the reference service on 127.0.0.1:8080, /metrics on :9091,
and the traffic replayer. ``--port``, ``--metrics-port``, ``--host`` and ``--no-traffic`` override the
environment (SERVICE_PORT, TUIST_METRICS_PORT, SERVICE_HOST, SERVICE_TRAFFIC)."""

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
    parser.add_argument("--no-traffic", action="store_true", help="do not start the traffic replayer")
    return parser.parse_args(argv)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import uvicorn
    from sqlalchemy.exc import ArgumentError, OperationalError

    from service.app import create_app
    from service.components import Service
    from service.replayer import Replayer
    from service.settings import ENV, ServiceSettings
    from telemetry import logs
    from telemetry.config import SettingsError
    from telemetry.exposition.server import ExpositionError

    overrides: dict[str, Any] = {k: v for k, v in (("host", args.host), ("port", args.port),
                                                   ("data_dir", args.data_dir)) if v is not None}
    if args.no_traffic:
        overrides["traffic"] = False
    try:
        settings = ServiceSettings.from_env(**overrides)
        logs.configure(settings.log_level)
        # httpx logs every request at INFO; the access log already has one line per request.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        service = Service.start(settings, metrics_port=args.metrics_port)
    except (SettingsError, ExpositionError) as exc:
        print(f"service: {exc}", file=sys.stderr)
        return 2
    except (OperationalError, ArgumentError) as exc:  # the database named by DATABASE_URL is unusable
        first = str(exc.orig if isinstance(exc, OperationalError) else exc).strip().splitlines()[0]
        print(f"service: cannot use the database at {ENV['database_url']}={settings.database_url or '(default)'}"
              f": {first}", file=sys.stderr)
        return 2

    config = uvicorn.Config(create_app(service), host=settings.host, port=settings.port, log_config=None,
                            access_log=False, lifespan="off", server_header=False)
    server = uvicorn.Server(config)
    replayer = Replayer(settings.base_url, service.credentials, workers=settings.traffic_workers,
                        interval=settings.traffic_interval) if settings.traffic else None

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if not server.started:
            return
        print(f"service:  {settings.base_url}/  (API docs {settings.base_url}/api/docs)\n"
              f"metrics:  {service.telemetry.metrics_url}\n"
              f"health:   {settings.base_url}/health/ready\n"
              f"traffic:  {'replaying CLI traffic' if replayer else 'off (--no-traffic)'}\n"
              f"data:     {settings.data_path.resolve()}", flush=True)
        if replayer is not None:
            replayer.start()

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


if __name__ == "__main__":
    sys.exit(main())
