"""The app tests/test_otel_instrument.py runs, plainly and under ``opentelemetry-instrument``: it calls
``telemetry.setup()`` (metrics port from argv[1]), makes one outbound httpx request and one SQLAlchemy query
through the package's instrumentations, records a run, prints ``ready`` and waits for stdin to close."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import httpx
import sqlalchemy
from opentelemetry import metrics

import telemetry
from telemetry.instrumentation.httpx import instrument_httpx
from telemetry.instrumentation.sqlalchemy import instrument_sqlalchemy


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    port, database = int(sys.argv[1]), Path(sys.argv[2])
    print(f"global meter provider before setup: {type(metrics.get_meter_provider()).__name__}", file=sys.stderr)
    t = telemetry.setup(metrics_host="127.0.0.1", metrics_port=port)
    assert t.metrics_url
    t.recorders.runs.record("build", is_ci=False, status=0, duration_ms=5.0)
    with httpx.Client() as client:
        instrument_httpx(client)
        client.get(t.metrics_url).raise_for_status()
    engine = sqlalchemy.create_engine(f"sqlite:///{database}")
    instrument_sqlalchemy(engine, pool_name="repo")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("SELECT 1"))
    print("ready", flush=True)
    sys.stdin.read()
    engine.dispose()
    telemetry.shutdown()


if __name__ == "__main__":
    main()
