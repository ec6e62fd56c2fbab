"""``Sender``: the bounded buffer and the one background thread that uploads analytics events in batches.

Why not ``posthog.Client``'s own queue: building an event there costs ≈ 90 µs of CPU (it reads the OS release
for every event) and its uploader another ≈ 85 µs per event, all under the GIL of the service's process, which
showed up in request latency; its ``shutdown()`` has no time limit (≈ 7 s per pending batch with the host down,
up to the 15 s request timeout per batch with a host that never answers).

Here the calling thread only appends a tuple to a ``collections.deque`` (atomic under the GIL, no lock, and no
thread woken per event: a ``queue.Queue`` would wake the sender for every event, and that thread switch alone
cost the service ≈ 0.1 ms per request on a busy 2-core machine). The sender thread wakes when ``flush_at``
events are waiting, every ``flush_interval`` seconds, or on flush/close; it turns up to ``flush_at`` events
into messages and posts them (``transport.Transport``: posthog-python's ``POST {host}/batch/`` wire format,
gzip), retrying connection errors, timeouts, 429 and 5xx with a short backoff.

Every event ends in exactly one place: delivered, or counted through ``on_drop(reason, n)`` with
``queue_full`` (the buffer held ``queue_size`` events), ``send_failed`` (the upload failed after its retries),
``error`` (building or sending raised) or ``shutdown`` (the shutdown deadline came first). ``close(timeout)``
cuts each remaining request's timeout at the deadline and skips backoffs, so the thread is done by then even
when the host is down or never answers; an upload that started earlier with a longer timeout is abandoned at
the deadline and its events counted then.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

_log = logging.getLogger(__name__)

Post = Callable[[list[dict[str, Any]], float], None]  # (messages, timeout seconds); raises on failure


def _retriable(error: Exception) -> bool:
    status = getattr(error, "status", None)  # posthog.request.APIError carries the HTTP status
    if isinstance(status, int):
        return status == 429 or status >= 500
    return True  # connection refused, reset, timeout


class Sender:
    def __init__(self, post: Post, build: Callable[[Any], dict[str, Any]],
                 on_drop: Callable[[str, int], None], *, queue_size: int = 10_000, flush_at: int = 100,
                 flush_interval: float = 5.0, request_timeout: float = 3.0, max_retries: int = 3,
                 backoff: float = 0.5) -> None:
        self._post = post
        self._build = build
        self._on_drop = on_drop
        self.maxsize = queue_size
        self.flush_at = flush_at
        self._threshold = min(flush_at, queue_size)  # buffered events that wake the thread
        self.flush_interval = flush_interval
        self.request_timeout = request_timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self._buffer: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()  # flush_at events waiting, a flush or close: send now
        self._closed = threading.Event()  # interrupts a retry's backoff
        self._deadline: float | None = None
        # Who counts a batch's fate: the thread, unless close() gave up waiting for it (abandoned).
        self._lock = threading.Lock()
        self._in_flight = 0
        self._abandoned = False
        self.sent = 0  # events PostHog answered 200 for (and not counted as dropped)
        self._thread = threading.Thread(target=self._run, name="analytics-sender", daemon=True)
        self._thread.start()

    # -- calling thread -------------------------------------------------------------------------------------
    def put(self, item: Any) -> bool:
        """Buffer one event without blocking or waking anyone; False (counted ``queue_full``) when full."""
        buffer = self._buffer
        if len(buffer) >= self.maxsize:
            self._on_drop("queue_full", 1)
            return False
        buffer.append(item)
        if len(buffer) >= self._threshold and not self._wake.is_set():
            self._wake.set()
        return True

    @property
    def pending(self) -> int:
        """Events buffered or being uploaded."""
        with self._lock:  # _take moves events from the buffer to in-flight under it
            return len(self._buffer) + self._in_flight

    def flush(self, timeout: float) -> bool:
        """Send what is buffered now; wait up to ``timeout`` seconds until it was delivered or dropped."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while self.pending:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float) -> None:
        """Deliver what is buffered within ``timeout`` seconds; what cannot be is dropped (``shutdown``)."""
        self._deadline = time.monotonic() + timeout
        self._closed.set()
        self._wake.set()
        self._thread.join(max(0.0, self._deadline - time.monotonic()) + 0.1)
        if self._thread.is_alive():
            # An upload started before close() with the full request timeout is still waiting: leave the
            # (daemon) thread to it, and count its batch and what is still buffered as dropped now.
            with self._lock:
                self._abandoned = True
                dropped = self._in_flight + len(self._buffer)
                self._in_flight = 0
                self._buffer.clear()
            # Counted now, before close() returns (and before the service stops serving /metrics); the
            # client's shutdown line reports them.
            self._on_drop("shutdown", dropped)

    # -- sender thread --------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            while self._buffer and not self._abandoned:
                self._send(self._take())
            if self._closed.is_set() and not self._buffer:
                return

    def _take(self) -> list[Any]:
        batch: list[Any] = []
        with self._lock:
            buffer = self._buffer
            while buffer and len(batch) < self.flush_at:
                batch.append(buffer.popleft())
            self._in_flight = len(batch)
        return batch

    def _send(self, items: list[Any]) -> None:
        if not items:
            return
        reason: str | None = "error"
        try:
            reason = self._deliver(items)
        except Exception:
            _log.exception("analytics: sending a batch failed")
        finally:
            with self._lock:
                if not self._abandoned:
                    if reason:
                        self._on_drop(reason, len(items))
                    else:
                        self.sent += len(items)
                self._in_flight = 0

    def _deliver(self, items: list[Any]) -> str | None:
        """Post a batch with retries; None when delivered, else the drop reason."""
        if self._past_deadline():
            return "shutdown"
        messages = []
        for item in items:
            messages.append(self._build(item))
            # Hand the GIL to any waiting request thread between events: a batch is ~2.5 ms of CPU, and a
            # request arriving meanwhile would otherwise wait for the interpreter's 5 ms switch interval.
            time.sleep(0)
        attempt = 0
        while True:
            try:
                self._post(messages, self._timeout())
                return None
            except Exception as error:
                attempt += 1
                if attempt > self.max_retries or not _retriable(error) or self._past_deadline():
                    if not self._closed.is_set():  # at shutdown the client's one line reports it
                        _log.warning("analytics: %d events not delivered to PostHog: %s", len(messages),
                                     error)
                    return "send_failed"
                # Closing interrupts the backoff: retries then run at once, within the deadline.
                self._closed.wait(self.backoff * 2 ** (attempt - 1))

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _timeout(self) -> float:
        if self._deadline is None:
            return self.request_timeout
        return max(0.01, min(self.request_timeout, self._deadline - time.monotonic()))
