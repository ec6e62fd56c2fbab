"""``Transport``: posts batches to PostHog's ``/batch/`` endpoint in posthog-python's wire format.

Why not ``posthog.request.batch_post`` itself: one 100-event batch cost it ≈ 3 ms of CPU (requests' machinery,
gzip at level 9, one ``json.dumps`` over the whole batch), held in stretches the service's request threads had
to wait out (up to the interpreter's 5 ms switch interval), which showed at the p99 of request latency. Here
each message is encoded on its own and the GIL is handed over between messages, the body is compressed at
level 1 (zlib releases the GIL while it compresses), and one keep-alive connection is reused: ≈ 1 ms per batch,
in short stretches.

The request is the one posthog-python sends: ``POST {url}/batch/`` with ``{"batch": [...], "sent_at": ...,
"api_key": ...}``, gzip with ``Content-Encoding: gzip``, posthog-python's User-Agent, messages encoded with its
``DatetimeSerializer``; a non-200 answer raises its ``APIError`` (with the status the sender's retry rule reads).
Proxies from the environment are not used.

A request that was sent but not answered within its timeout may have reached PostHog. The next attempt for the
same batch therefore first waits again for the answer on the same connection instead of sending the batch a
second time; only if that wait times out too is the batch sent again (with the same event ``uuid``s, which
PostHog uses to drop duplicates).
"""

from __future__ import annotations

import gzip
import http.client
import json
import ssl
import time
import urllib.parse
from datetime import UTC, datetime
from typing import Any

_CONNECTION_ERRORS = (OSError, http.client.HTTPException)


class Transport:
    """One keep-alive connection to the PostHog host, used by the sender thread only."""

    def __init__(self, api_key: str, url: str, *, gzip: bool = True) -> None:
        from posthog.request import USER_AGENT, APIError, DatetimeSerializer

        parts = urllib.parse.urlsplit(url.strip().rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) URL for PostHog, got {url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = f"{parts.path}/batch/"
        self._gzip = gzip
        self._headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._api_key = json.dumps(api_key)
        self._encoder = DatetimeSerializer()
        self._api_error = APIError
        self._connection: http.client.HTTPConnection | None = None
        # The sender retries a failed batch with the same list: its bytes are built once, not per attempt.
        self._last: tuple[list[dict[str, Any]], bytes] | None = None
        # The batch whose request was sent and whose answer timed out, on the still-open connection.
        self._unanswered: list[dict[str, Any]] | None = None

    def post(self, messages: list[dict[str, Any]], timeout: float) -> None:
        """Send one batch; raises ``TypeError`` for a value JSON cannot encode, ``APIError`` for a non-200
        answer, ``OSError``/``HTTPException`` when the connection fails."""
        if self._last is not None and self._last[0] is messages:
            body = self._last[1]
        else:
            body = self._encode(messages)
            self._last = (messages, body)
        unanswered, self._unanswered = self._unanswered, None
        if unanswered is messages and self._connection is not None:
            status, payload = self._await_answer(timeout)
        else:
            status, payload = self._send(body, timeout)
        if status != 200:
            raise self._api_error(status, payload.decode("utf-8", "replace")[:500])

    def _encode(self, messages: list[dict[str, Any]]) -> bytes:
        encoded = []
        for message in messages:
            encoded.append(self._encoder.encode(message))
            time.sleep(0)  # let a waiting request thread run: this thread's latency does not matter
        sent_at = json.dumps(datetime.now(tz=UTC).isoformat())
        body = f'{{"batch": [{", ".join(encoded)}], "sent_at": {sent_at}, "api_key": {self._api_key}}}'.encode()
        return gzip.compress(body, compresslevel=1) if self._gzip else body

    def _await_answer(self, timeout: float) -> tuple[int, bytes]:
        """Wait once more for the answer to the request sent last; the connection is dropped if that fails."""
        connection = self._connection
        assert connection is not None
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        try:
            return self._answer(connection)
        except _CONNECTION_ERRORS:
            self.close()
            raise

    def _send(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        reused = self._connection is not None
        try:
            return self._request(body, timeout)
        except TimeoutError:
            raise  # sent, maybe received: not sent again here (see post)
        except _CONNECTION_ERRORS:
            self.close()
            if not reused:
                raise
        # A kept-alive connection the host had already closed: one fresh attempt, not a failed batch.
        try:
            return self._request(body, timeout)
        except _CONNECTION_ERRORS:
            self.close()
            raise

    def _request(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        connection = self._connection
        if connection is None:
            if self._https:
                connection = http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                                         context=ssl.create_default_context())
            else:
                connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            self._connection = connection
        elif connection.sock is not None:
            connection.sock.settimeout(timeout)
        connection.request("POST", self._path, body, self._headers)
        if self._last is not None and self._last[1] is body:
            self._unanswered = self._last[0]
        try:
            return self._answer(connection)
        except TimeoutError:
            raise  # the connection stays open: the next attempt waits for this answer (post)
        except BaseException:
            self._unanswered = None
            raise

    def _answer(self, connection: http.client.HTTPConnection) -> tuple[int, bytes]:
        response = connection.getresponse()
        self._unanswered = None
        payload = response.read()
        if response.will_close:
            self.close()
        return response.status, payload

    def close(self) -> None:
        self._unanswered = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None
