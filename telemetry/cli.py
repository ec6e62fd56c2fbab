"""``python -m telemetry`` / ``tuist-telemetry``: print the catalogue, simulate activity and serve it, or serve
the merged ``/metrics`` of a multi-process directory (``serve --dir D``: a systemd unit, a supervisord
program or a Kubernetes sidecar beside workers that record with ``TUIST_METRICS_MULTIPROCESS_DIR=D``)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from telemetry.catalogue import CATALOGUE, MetricSpec
from telemetry.config import ENV

# simulate serves made-up numbers for trying a Prometheus or Grafana setup: only this machine sees them unless
# --host or the host variable says otherwise (the library's own default, 0.0.0.0, is for a service's scrapers).
SIMULATE_HOST = "127.0.0.1"


def plain(text: str) -> str:
    """A docstring as terminal text: reST literals (``x``) become plain words, paragraphs are kept."""
    return text.replace("``", "")


def catalogue_markdown(specs: Sequence[MetricSpec] = CATALOGUE) -> str:
    """The README's metric table."""
    rows = ["| Name on /metrics | Type | Doc type | Labels | Unit | Instrument | Description |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for s in specs:
        names = ", ".join(f"`{n}`" for n in (s.doc_names if s.doc_names else (s.name,)))
        labels = ", ".join(f"`{n}`" + (f" ({'/'.join(sorted(s.allowed[n]))})" if n in s.allowed else "")
                           for n in s.labels)
        doc_type = s.doc_type if s.documented else "(not in the doc)"
        rows.append(f"| {names} | {s.kind.value} | {doc_type} | {labels} | {s.unit} | `{s.instrument}` | {s.help} |")
    return "\n".join(rows)


def catalogue_json(specs: Sequence[MetricSpec] = CATALOGUE) -> str:
    return json.dumps([{"name": s.name, "instrument": s.instrument, "type": s.kind.value, "doc_type": s.doc_type,
                        "documented": s.documented, "doc_names": list(s.doc_names), "labels": list(s.labels),
                        "unit": s.unit,
                        "allowed": {k: sorted(v) for k, v in s.allowed.items()}, "buckets": list(s.buckets),
                        "help": s.help, "domain": s.domain} for s in specs], indent=2)


def main(argv: Sequence[str] | None = None) -> int:
    import telemetry

    parser = argparse.ArgumentParser(prog="tuist-telemetry", description=plain(__doc__ or ""))
    parser.add_argument("--version", action="version", version=f"%(prog)s {telemetry.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    cat = commands.add_parser("catalogue", help="print every metric this package exposes")
    cat.add_argument("--format", choices=("markdown", "json"), default="markdown")
    sim = commands.add_parser("simulate", help="record synthetic activity for every metric and serve /metrics")
    sim.add_argument("--host", default=None,
                     help=f"address to bind (default: {ENV['metrics_host']} or {SIMULATE_HOST}, this machine only)")
    sim.add_argument("--port", type=int, default=None, help=f"port (default: {ENV['metrics_port']} or 9091)")
    sim.add_argument("--duration", type=float, default=None, help="seconds to run (default: until interrupted)")
    sim.add_argument("--interval", type=float, default=0.5, help="seconds between ticks")
    sim.add_argument("--seed", type=int, default=None)
    srv = commands.add_parser("serve", help="serve /metrics merged over a multi-process directory")
    srv.add_argument("--dir", required=True,
                     help=f"the directory the workers record into ({ENV['multiprocess_dir']} of the workers)")
    srv.add_argument("--host", default=None, help=f"address to bind (default: {ENV['metrics_host']} or 0.0.0.0)")
    srv.add_argument("--port", type=int, default=None, help=f"port (default: {ENV['metrics_port']} or 9091)")
    args = parser.parse_args(argv)

    if args.command == "catalogue":
        print(catalogue_markdown() if args.format == "markdown" else catalogue_json())
        return 0
    if args.command == "serve":
        return serve(args.dir, args.host, args.port)

    from telemetry.simulate import Simulator

    overrides = {k: v for k, v in (("metrics_host", args.host), ("metrics_port", args.port)) if v is not None}
    if args.host is None and not telemetry.Settings.from_environment("metrics_host"):
        overrides["metrics_host"] = SIMULATE_HOST
    try:
        running = telemetry.setup(**overrides)
    except (telemetry.SettingsError, telemetry.ExpositionError) as exc:
        print(f"tuist-telemetry: {exc}", file=sys.stderr)
        return 2
    simulator = Simulator(running.recorders, seed=args.seed)
    signal.signal(signal.SIGTERM, lambda *_: simulator.stop())
    print(f"simulating; metrics at {running.metrics_url}", flush=True)
    try:
        simulator.run(args.duration, args.interval)
    except KeyboardInterrupt:
        pass
    finally:
        telemetry.shutdown()
    return 0


def serve(directory: str, host: str | None, port: int | None) -> int:
    """Serve the merged view of ``directory`` until SIGTERM or Ctrl-C; 2 when it cannot start. The port is
    bound with SO_REUSEPORT, as the workers bind it, so it may share the workers' metrics port."""
    from telemetry.config import Settings, SettingsError
    from telemetry.exposition.server import ExpositionError, MetricsServer
    from telemetry.registry import Registry
    from telemetry.workers import DirectoryView

    if not os.path.isdir(directory):
        print(f"tuist-telemetry: --dir {directory!r} is not a directory", file=sys.stderr)
        return 2
    if not os.access(directory, os.W_OK | os.X_OK):
        print(f"tuist-telemetry: --dir {directory!r} is not writable (dead workers' files are compacted "
              "there)", file=sys.stderr)
        return 2
    overrides: dict[str, Any] = {k: v for k, v in (("metrics_host", host), ("metrics_port", port))
                                 if v is not None}
    try:
        settings = Settings.from_env(**overrides)
        registry = Registry()
        registry.set_limits(settings.cardinality_limit, settings.cardinality_limits)
        registry.set_label_limits(settings.label_value_max_length, settings.label_bytes_per_series)
        view = DirectoryView(os.path.abspath(directory), registry)
        server = MetricsServer.from_settings(settings, view.render, shared=True)
    except (SettingsError, ExpositionError) as exc:
        print(f"tuist-telemetry: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"serving {os.path.abspath(directory)} at {server.url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        view.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
