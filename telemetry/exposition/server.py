"""The HTTP endpoint that serves ``/metrics``: optional bearer or basic auth, gzip when asked for."""

from __future__ import annotations

import base64
import gzip
import hmac
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from telemetry.config import ENV
from telemetry.exposition.render import CONTENT_TYPE

_log = logging.getLogger(__name__)


class ExpositionError(RuntimeError):
    """The endpoint could not start; the message names the address and the setting that changes it."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _SharedServer(_Server):
    """Several processes of one service bind the same port (SO_REUSEPORT) and the kernel spreads scrapes over
    them; in multi-process mode each answers with the merged view of all of them."""

    allow_reuse_port = True


class MetricsServer:
    """Serves ``render()`` at ``path`` on a background thread until ``stop()``."""

    def __init__(self, render: Callable[[], str], *, host: str = "0.0.0.0", port: int = 9091,
                 path: str = "/metrics", bearer_token: str = "", basic_auth: str = "",
                 shared: bool = False) -> None:
        self._render = render
        self.path = path
        expected = ""
        if bearer_token:
            expected = f"Bearer {bearer_token}"
        elif basic_auth:
            expected = "Basic " + base64.b64encode(basic_auth.encode()).decode()
        self._auth_scheme = expected.split(" ", 1)[0]
        handler = self._handler(expected.encode())
        try:
            self._httpd = (_SharedServer if shared else _Server)((host, port), handler)
        except OSError as exc:
            raise ExpositionError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}. Choose another port with "
                f"{ENV['metrics_port']} (or setup(metrics_port=...)), or another address with "
                f"{ENV['metrics_host']}.") from exc
        address = self._httpd.server_address
        self.host, self.port = str(address[0]), int(address[1])  # port 0 becomes the one the OS picked
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="telemetry-metrics",
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}{self.path}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _handler(self, expected: bytes) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._serve(body=True)

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def _serve(self, body: bool) -> None:
                if self.path.split("?", 1)[0] != server.path:
                    return self._plain(404, b"Not found; metrics are at " + server.path.encode() + b"\n", body)
                if expected and not hmac.compare_digest(
                        self.headers.get("Authorization", "").encode(), expected):
                    return self._plain(401, b"Unauthorized\n", body,
                                       {"WWW-Authenticate": f'{server._auth_scheme} realm="metrics"'})
                try:
                    # "replace": an SDK attribute holding a lone surrogate must not fail the whole scrape.
                    payload = server._render().encode("utf-8", "replace")
                except Exception:
                    _log.exception("rendering /metrics failed")
                    return self._plain(500, b"rendering metrics failed\n", body)
                headers = {"Content-Type": CONTENT_TYPE}
                if "gzip" in self.headers.get("Accept-Encoding", ""):
                    payload = gzip.compress(payload, compresslevel=1)
                    headers["Content-Encoding"] = "gzip"
                self._send(200, payload, body, headers)

            def _plain(self, status: int, text: bytes, body: bool, extra: dict[str, str] | None = None) -> None:
                self._send(status, text, body, {"Content-Type": "text/plain; charset=utf-8", **(extra or {})})

            def _send(self, status: int, payload: bytes, body: bool, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if body:
                    self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:  # scrapes are not worth a log line
                pass

        return Handler
