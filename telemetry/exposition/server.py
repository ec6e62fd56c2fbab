"""The built-in HTTP server for ``/metrics``: HTTP/1.1 parsed by h11, one thread per connection, bounded.

A scraper that misbehaves cannot take the service down: a request head must be complete within the request
timeout (the whole head, so a client sending a byte a second is cut too), an idle keep-alive connection is
closed after the idle timeout, connections beyond the cap get 503 with ``Retry-After``, request bodies are
read and dropped up to 64 KiB (more is 413), and a client that goes away is one warning log line. What is
answered comes from ``telemetry.exposition.endpoint``.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import h11

from telemetry.config import ENV
from telemetry.exposition.endpoint import Endpoint, Response, plain

if TYPE_CHECKING:
    from telemetry.config import Settings

_log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024  # request bodies up to this are read and dropped; a scrape has none
MAX_HEAD = 16 * 1024
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain; charset=utf-8\r\n"
         b"Content-Length: 39\r\nConnection: close\r\n\r\ntoo many connections to /metrics; retry\n")


class ExpositionError(RuntimeError):
    """The endpoint could not start; the message names the address and the setting that changes it."""


class _Dropped(Exception):
    """The client closed or reset the connection."""


class _TimedOut(Exception):
    """The client did not send in time."""


class MetricsServer:
    """Serves ``render()`` at ``path`` on background threads until ``stop()``.

    ``shared``: several processes of one service bind the same port (SO_REUSEPORT) and the kernel spreads
    scrapes over them; in multi-process mode each answers with the merged view of all of them.
    """

    def __init__(self, render: Callable[[], str], *, host: str = "0.0.0.0", port: int = 9091,
                 path: str = "/metrics", bearer_token: str = "", basic_auth: str = "", shared: bool = False,
                 request_timeout: float = 10.0, idle_timeout: float = 30.0, max_connections: int = 64) -> None:
        self.endpoint = Endpoint(render, path=path, bearer_token=bearer_token, basic_auth=basic_auth)
        self.path = path
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        try:
            self._listener = _listen(host, port, shared)
        except OSError as exc:
            raise ExpositionError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}. Choose another port with "
                f"{ENV['metrics_port']} (or setup(metrics_port=...)), or another address with "
                f"{ENV['metrics_host']}.") from exc
        address = self._listener.getsockname()
        self.host, self.port = str(address[0]), int(address[1])  # port 0 becomes the one the OS picked
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._accept_loop, name="telemetry-metrics", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Settings, render: Callable[[], str], *, shared: bool = False) -> MetricsServer:
        """The server the ``TUIST_METRICS_*`` settings describe."""
        return cls(render, host=settings.metrics_host, port=settings.metrics_port, path=settings.metrics_path,
                   bearer_token=settings.metrics_bearer_token, basic_auth=settings.metrics_basic_auth,
                   shared=shared, request_timeout=settings.metrics_request_timeout,
                   idle_timeout=settings.metrics_idle_timeout, max_connections=settings.metrics_max_connections)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}{self.path}"

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def stop(self) -> None:
        """Stop accepting, close every open connection and release the port."""
        self._stopping.set()
        self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        with self._lock:
            open_now = list(self._connections)
        for sock in open_now:  # their threads see the end of the stream and close them
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def _accept_loop(self) -> None:
        poller = select.poll()  # poll, not select: a busy service's descriptors may be numbered past 1024
        poller.register(self._listener, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._stopping.is_set():
            ready = {fd for fd, _ in poller.poll()}
            if self._wake_r.fileno() in ready:
                return
            try:
                sock, peer = self._listener.accept()
            except OSError:
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                busy = len(self._connections) >= self.max_connections
                if not busy:
                    self._connections.add(sock)
            if busy:
                _refuse(sock)
                continue
            threading.Thread(target=self._serve, args=(sock, peer), name="telemetry-metrics-conn",
                             daemon=True).start()

    def _serve(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        reader = _Reader(sock, conn)
        kept_alive = False
        try:
            while not self._stopping.is_set():
                # A new connection has the request timeout for its first head; a kept-alive one waits up to
                # the idle timeout for the next request to begin, then has the request timeout for its head.
                if kept_alive and not reader.wait_readable(self.idle_timeout):
                    return
                deadline = time.monotonic() + self.request_timeout
                event = reader.next_event(deadline)
                if isinstance(event, h11.ConnectionClosed):
                    return
                assert isinstance(event, h11.Request)
                response, body_ok = self._answer(event, reader, deadline)
                _send(sock, conn, response, head_only=event.method == b"HEAD")
                if not body_ok:
                    _drain(sock)  # so the client reads the 413 rather than a reset
                    return
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
                kept_alive = True
        except _TimedOut:
            _log.info("closed a /metrics connection from %s:%s: no complete request within %s s",
                      peer[0], peer[1], self.request_timeout)
        except _Dropped as exc:
            _log.warning("a /metrics client (%s:%s) closed the connection before the response was sent: %s",
                         peer[0], peer[1], exc)
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                with contextlib.suppress(_Dropped, h11.LocalProtocolError):
                    _send(sock, conn, plain(exc.error_status_hint, b"Bad request\n"), head_only=False)
        finally:
            with self._lock:
                self._connections.discard(sock)
            _close(sock)

    def _answer(self, request: h11.Request, reader: _Reader, deadline: float) -> tuple[Response, bool]:
        """The response, and whether the request body was read (False: the connection must close)."""
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in request.headers}
        declared = headers.get("content-length", "0")
        if declared.isdigit() and int(declared) > MAX_BODY:
            return plain(413, b"Request body too large\n"), False
        received = 0
        while True:  # a GET may carry a body: read it, so it is not taken for the next request
            event = reader.next_event(deadline)
            if isinstance(event, h11.EndOfMessage):
                break
            if isinstance(event, h11.Data):
                received += len(event.data)
                if received > MAX_BODY:  # chunked bodies declare no length
                    return plain(413, b"Request body too large\n"), False
            elif isinstance(event, h11.ConnectionClosed):
                raise _Dropped("connection closed during the request body")
        return self.endpoint.respond(request.method.decode("latin-1"), request.target.decode("latin-1"),
                                     authorization=headers.get("authorization", ""),
                                     accept_encoding=headers.get("accept-encoding", "")), True


class _Reader:
    """Feeds h11 from the socket with an overall deadline: each recv waits only for what is left of it."""

    def __init__(self, sock: socket.socket, conn: h11.Connection) -> None:
        self._sock = sock
        self._conn = conn

    def wait_readable(self, timeout: float) -> bool:
        poller = select.poll()
        try:
            poller.register(self._sock, select.POLLIN)
            return bool(poller.poll(timeout * 1000))
        except (OSError, ValueError):  # closed by stop()
            return False

    def next_event(self, deadline: float) -> h11.Event | type[h11.NEED_DATA]:
        while True:
            event = self._conn.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            left = deadline - time.monotonic()
            if left <= 0:
                raise _TimedOut
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                raise _TimedOut from None
            except OSError as exc:
                if self._conn.their_state is h11.IDLE and not self._conn.trailing_data[0]:
                    return h11.ConnectionClosed()
                raise _Dropped(exc.strerror or str(exc)) from None
            self._conn.receive_data(data)


def _send(sock: socket.socket, conn: h11.Connection, response: Response, *, head_only: bool) -> None:
    """The whole response in one sendall (with TCP_NODELAY no delayed-ACK wait between head and body)."""
    headers = list(response.headers)
    if response.status >= 400 and response.status not in (401, 404, 405):
        headers.append(("Connection", "close"))
    data = conn.send(h11.Response(status_code=response.status, headers=headers)) or b""
    if not head_only and response.body:
        data += conn.send(h11.Data(data=response.body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    try:
        sock.settimeout(10.0)
        sock.sendall(data)
    except OSError as exc:
        raise _Dropped(exc.strerror or str(exc)) from None


def _drain(sock: socket.socket, limit: int = 1 << 20, seconds: float = 1.0) -> None:
    """Half-close, then read and drop what the client still sends (bounded), before the socket closes."""
    deadline = time.monotonic() + seconds
    try:
        sock.shutdown(socket.SHUT_WR)
        while limit > 0 and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                return
            limit -= len(chunk)
    except OSError:
        pass


def _refuse(sock: socket.socket) -> None:
    """503 to a connection beyond the cap; never blocks the accept loop for long."""
    try:
        sock.settimeout(0.5)
        sock.sendall(_BUSY)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv on it
    sock.close()


def _listen(host: str, port: int, shared: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return sock
