"""A real threaded HTTP(S) server on loopback for tests and benchmarks.

Every request's behaviour comes from its query string, so one server serves every scenario:

- ``before=S``: sleep S seconds before sending the status line and headers;
- ``chunks=N`` and ``between=S``: send the body as N pieces with S seconds between them;
- ``size=B``: body bytes in total (default 2); ``status=C``: the status code (default 200);
- ``close=1``: answer with ``Connection: close``.

The server speaks HTTP/1.1 with keep-alive, counts the TCP connections it accepted (to tell new connections
from reused ones) and, with ``tls=True``, serves HTTPS with a certificate from a fresh in-memory CA
(trustme); ``client_ssl_context()`` trusts it. ``handshake_delay=S`` makes the server wait S seconds before
answering each TLS handshake (a slow handshake whose time is known). Use it as a context manager: the server
thread is stopped and every socket closed on exit.
"""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small delayed chunks must leave at once
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read metrics, not logs
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
        before = float(query.get("before", 0))
        chunks = max(1, int(query.get("chunks", 1)))
        between = float(query.get("between", 0))
        size = int(query.get("size", 2))
        status = int(query.get("status", 200))
        if before:
            time.sleep(before)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        if query.get("close") == "1":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        body = b"x" * size
        step = -(-size // chunks) if size else 0
        for i in range(chunks):
            if i and between:
                time.sleep(between)
            piece = body[i * step:(i + 1) * step]
            if piece:
                self.wfile.write(piece)

    do_GET = do_POST = do_PUT = do_DELETE = _answer


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, ssl_context: ssl.SSLContext | None, handshake_delay: float = 0.0) -> None:
        self.accepted = 0
        self.handshake_delay = handshake_delay
        self._ssl_context = ssl_context
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        self.accepted += 1
        if self._ssl_context is not None:
            sock = self._ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self._open_lock:
            self._open.add(sock)
        return sock, addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            if self.handshake_delay:
                time.sleep(self.handshake_delay)
            try:
                request.do_handshake()  # in the handler thread, so a slow handshake blocks nobody else
            except (OSError, ssl.SSLError):
                return
        super().finish_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_all(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
            self._open.clear()
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class LoopbackServer:
    """``with LoopbackServer() as server: httpx.get(server.url + "/x?before=0.2")``."""

    def __init__(self, *, tls: bool = False, handshake_delay: float = 0.0) -> None:
        self._ca: Any = None
        context = None
        if tls:
            import trustme

            self._ca = trustme.CA()
            cert = self._ca.issue_cert("127.0.0.1", "localhost")
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(context)
        self._server = _Server(context, handshake_delay)
        self.port: int = self._server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                         name=f"loopback-http-{self.port}", daemon=True)
        self._thread.start()

    @property
    def accepted(self) -> int:
        """TCP connections accepted so far."""
        return self._server.accepted

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's certificate (TLS servers only)."""
        if self._ca is None:
            raise RuntimeError("this server was started without tls=True")
        context = ssl.create_default_context()
        self._ca.configure_trust(context)
        return context

    def close(self) -> None:
        self._server.shutdown()
        self._server.close_all()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


@contextmanager
def loopback_server(*, tls: bool = False) -> Iterator[LoopbackServer]:
    with LoopbackServer(tls=tls) as server:
        yield server


def refused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
