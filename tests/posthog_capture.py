"""A real PostHog capture endpoint on loopback for tests, and a black hole.

``CaptureServer`` records every event POSTed to it the way PostHog's ingestion accepts them: the server SDK's
``/batch/`` (JSON, optionally ``Content-Encoding: gzip``) and posthog-js's ``/e/``, ``/i/v0/e/`` (JSON,
gzip recognised by its magic bytes or ``?compression=gzip-js``, or base64 form data), answers posthog-js's
``/flags``/``/decide`` with an empty config, serves static files (posthog-js's ``/static/array.js``) and
answers CORS preflights.

``BlackHole`` accepts TCP connections and never answers: a PostHog host that hangs.
"""

from __future__ import annotations

import base64
import gzip
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Post:
    """One POST as received: path (without query), query, request headers, decoded events."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    events: list[dict[str, Any]] = field(default_factory=list)


def _decode(raw: bytes, headers: Mapping[str, str], query: Mapping[str, str]) -> Any:
    # posthog-js gzips without saying so in a header (older versions add ?compression=gzip-js).
    if (headers.get("content-encoding", "").lower() == "gzip" or query.get("compression") == "gzip-js"
            or raw[:2] == b"\x1f\x8b"):
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8")
    if query.get("compression") == "base64" or text.startswith("data="):
        form = urllib.parse.parse_qs(text)
        data = form["data"][0]
        try:
            return json.loads(base64.b64decode(data))
        except ValueError:
            return json.loads(data)
    return json.loads(text)


def _events(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, list):
        return [e for e in body if isinstance(e, dict)]
    if isinstance(body, dict):
        if isinstance(body.get("batch"), list):
            return [e for e in body["batch"] if isinstance(e, dict)]
        if "event" in body:
            return [body]
    return []


class CaptureServer:
    """``with CaptureServer(static={"/static/array.js": path}) as ph: ... ph.url ... ph.events``."""

    def __init__(self, static: Mapping[str, Path] | None = None) -> None:
        self.static = dict(static or {})
        self.posts: list[Post] = []
        self.requests: list[str] = []  # "METHOD /path" of every request, in order
        self.undecodable: list[tuple[str, dict[str, str], bytes, str]] = []  # POSTs that were not events
        self.fail: list[int] = []  # statuses to answer the next event POSTs with (not recorded as received)
        self.failed = 0  # event POSTs answered with a status from ``fail``
        self.delay = 0.0  # seconds to wait before answering an event POST (recorded on arrival): a slow host
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _cors(self) -> None:
                self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin") or "*")
                self.send_header("Access-Control-Allow-Credentials", "true")
                self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
                self.send_header("Access-Control-Allow-Headers", self.headers.get(
                    "Access-Control-Request-Headers") or "Content-Type")

            def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self._cors()
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_OPTIONS(self) -> None:
                outer._note(f"OPTIONS {self.path}")
                self._reply(204, b"")

            def do_GET(self) -> None:
                path = urllib.parse.urlsplit(self.path).path
                outer._note(f"GET {path}")
                file = outer.static.get(path)
                if file is not None:
                    self._reply(200, file.read_bytes(), "application/javascript")
                else:
                    self._reply(404, b"{}")

            def do_POST(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                query = {k: v[0] for k, v in urllib.parse.parse_qs(parts.query).items()}
                headers = {k.lower(): v for k, v in self.headers.items()}
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer._note(f"POST {parts.path}")
                if parts.path.rstrip("/") in ("/flags", "/decide"):
                    self._reply(200, b'{"featureFlags":{},"flags":{}}')
                    return
                with outer._lock:
                    status = outer.fail.pop(0) if outer.fail else 0
                    outer.failed += bool(status)
                if status:
                    self._reply(status, b'{"error":"failing on purpose"}')
                    return
                try:
                    body = _decode(raw, headers, query)
                except Exception as exc:
                    outer.undecodable.append((self.path, headers, raw, repr(exc)))
                    self._reply(400, json.dumps({"error": str(exc)}).encode())
                    return
                outer._record(Post(parts.path, query, headers, body, _events(body)))
                if outer.delay:
                    time.sleep(outer.delay)
                self._reply(200, b'{"status":1}')

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _note(self, line: str) -> None:
        with self._lock:
            self.requests.append(line)

    def _record(self, post: Post) -> None:
        with self._changed:
            self.posts.append(post)
            self._changed.notify_all()

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [e for p in self.posts for e in p.events]

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0) -> list[
            dict[str, Any]]:
        """Wait until ``predicate(events)`` holds; returns the events (raises AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                events = [e for p in self.posts for e in p.events]
                if predicate(events):
                    return events
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out; received events: {[e.get('event') for e in events]}")
                self._changed.wait(remaining)

    def start(self) -> CaptureServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> CaptureServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class BlackHole:
    """Accepts connections and never reads or answers them (until stopped)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self._sock.settimeout(0.2)
        self._conns: list[socket.socket] = []
        self._running = True
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    @property
    def connections(self) -> int:
        return len(self._conns)

    def _accept(self) -> None:
        while self._running:
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self._conns.append(conn)

    def __enter__(self) -> BlackHole:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._running = False
        self._thread.join(5)
        for conn in self._conns:
            conn.close()
        self._sock.close()
