"""Test helpers for the reference service: start it exactly as ``make run`` does (``python -m service``) on
free ports, read its /metrics, and a loopback server that records what is POSTed to it (an OTLP/HTTP or Sentry
endpoint stand-in)."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from telemetry.testing import WaitTimeout, wait_for
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def issue_token(service: ServiceProcess, user_id: int = 1, kind: str = "access") -> str:
    """Insert a token for a seeded user straight into the service's SQLite database."""
    token = secrets.token_urlsafe(16)
    with sqlite3.connect(service.data_dir / "service.db", timeout=10) as db:
        db.execute("INSERT INTO tokens (digest, kind, user_id, expires_at, revoked) VALUES (?, ?, ?, ?, 0)",
                   (hashlib.sha256(token.encode()).hexdigest(), kind, user_id, time.time() + 3600))
    return token


class ServiceProcess:
    """``python -m service`` in a subprocess on free ports; use as a context manager."""

    def __init__(self, tmp: Path, *args: str, env: Mapping[str, str] | None = None, traffic: bool = True) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.data_dir = tmp / "data"
        self.stdout_path = tmp / "stdout.txt"
        self.stderr_path = tmp / "stderr.txt"
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        argv = [sys.executable, "-m", "service", "--port", str(self.port), "--metrics-port",
                str(self.metrics_port), "--data-dir", str(self.data_dir), *args]
        if not traffic:
            argv.append("--no-traffic")
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("OTEL_", "TUIST_", "SERVICE_", "SENTRY_", "DATABASE_URL", "REDIS_URL"))}
        full_env.update(env or {})
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdout=self.stdout_path.open("wb"),
                                        stderr=self.stderr_path.open("wb"))

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until the service answers /health/live (fails with the process's output if it exits)."""
        def live() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"the service exited with {self.process.returncode}:\n{self.output()}")
            return httpx.get(f"{self.url}/health/live", timeout=1).status_code == 200

        try:
            wait_for(live, timeout, interval=0.1, what="the service to answer /health/live",
                     ignore=(httpx.TransportError,))
        except WaitTimeout as exc:
            raise AssertionError(f"{exc}:\n{self.output()}") from None

    def scrape(self) -> str:
        response = httpx.get(self.metrics_url, timeout=5)
        response.raise_for_status()
        return response.text

    def output(self) -> str:
        return (self.stdout_path.read_text(errors="replace") + "\n--- stderr ---\n"
                + self.stderr_path.read_text(errors="replace")[-6000:])

    def log_lines(self) -> list[str]:
        return self.stderr_path.read_text(errors="replace").splitlines()

    def access_line(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The JSON access line of the request with ``request_id`` (written just after its response)."""
        def find() -> dict[str, Any] | None:
            for raw in self.log_lines():
                record: dict[str, Any] = json.loads(raw)
                if record.get("request_id") == request_id and record.get("message") == "request completed":
                    return record
            return None

        return wait_for(find, timeout, interval=0.1, what=f"the access line of request {request_id}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class RecordingServer:
    """A loopback HTTP server that answers 200 to every POST and keeps (path, headers, body)."""

    def __init__(self, status: int = 200, body: bytes = b"") -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length)
                with recorder.lock:
                    recorder.requests.append((self.path, dict(self.headers.items()), data))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def received(self, path_prefix: str = "") -> list[tuple[str, dict[str, str], bytes]]:
        with self.lock:
            return [r for r in self.requests if r[0].startswith(path_prefix)]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def __enter__(self) -> RecordingServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
