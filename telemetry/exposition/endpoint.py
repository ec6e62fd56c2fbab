"""What ``/metrics`` answers, independent of the HTTP server carrying it: the auth check, content negotiation
(gzip by ``Accept-Encoding`` with q-values) and the response. The built-in server (``server.py``) and the
mountable ASGI and WSGI apps (``app.py``) all answer through one ``Endpoint``, so they behave the same."""

from __future__ import annotations

import base64
import binascii
import gzip
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass

from telemetry.exposition.render import CONTENT_TYPE

_log = logging.getLogger(__name__)
METHODS = ("GET", "HEAD")
_PLAIN = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Response:
    """Status, headers (``Content-Length`` included) and body; for HEAD the carrier sends no body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether ``Accept-Encoding`` allows gzip: listed (or ``*`` when gzip is not listed) with q above 0."""
    gzip_q: float | None = None
    star_q: float | None = None
    for item in accept_encoding.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0  # an unreadable weight does not make the coding acceptable
        coding = coding.lower()
        if coding in ("gzip", "x-gzip"):
            gzip_q = q if gzip_q is None else max(gzip_q, q)
        elif coding == "*":
            star_q = q
    if gzip_q is not None:
        return gzip_q > 0
    return star_q is not None and star_q > 0


class Endpoint:
    """Answers a request for the exposition ``render()`` returns.

    ``path`` None answers on every path (a mounted app: the framework routed the request here already).
    ``bearer_token`` or ``basic_auth`` (``user:password``) require that credential; the scheme is compared
    case-insensitively, the credential in constant time.
    """

    def __init__(self, render: Callable[[], str], *, path: str | None = "/metrics", bearer_token: str = "",
                 basic_auth: str = "") -> None:
        self._render = render
        self.path = path
        self._scheme = "bearer" if bearer_token else ("basic" if basic_auth else "")
        self._secret = (bearer_token or basic_auth).encode()
        self._challenge = (("WWW-Authenticate", f'{self._scheme.capitalize()} realm="metrics"'),)

    def authorized(self, authorization: str) -> bool:
        if not self._scheme:
            return True
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() != self._scheme:
            return False
        given = credential.strip().encode("latin-1", "replace")
        if self._scheme == "basic":
            try:
                given = base64.b64decode(given, validate=True)
            except (binascii.Error, ValueError):
                return False
        return hmac.compare_digest(given, self._secret)

    def respond(self, method: str, path: str, *, authorization: str = "", accept_encoding: str = "") -> Response:
        """The response to ``method path`` (the query string, if any, is ignored)."""
        if method not in METHODS:
            return plain(405, b"Method not allowed; use GET or HEAD\n", (("Allow", ", ".join(METHODS)),))
        if self.path is not None and path.split("?", 1)[0] != self.path:
            return plain(404, b"Not found; metrics are at " + self.path.encode() + b"\n")
        if not self.authorized(authorization):
            return plain(401, b"Unauthorized\n", self._challenge)
        try:
            # "replace": an SDK attribute holding a lone surrogate must not fail the whole scrape.
            payload = self._render().encode("utf-8", "replace")
        except Exception:
            _log.exception("rendering /metrics failed")
            return plain(500, b"rendering metrics failed\n")
        headers: tuple[tuple[str, str], ...] = (("Content-Type", CONTENT_TYPE), ("Vary", "Accept-Encoding"))
        if accept_encoding and accepts_gzip(accept_encoding):
            payload = gzip.compress(payload, compresslevel=1)
            headers += (("Content-Encoding", "gzip"),)
        return Response(200, (*headers, ("Content-Length", str(len(payload)))), payload)


def plain(status: int, text: bytes, extra: tuple[tuple[str, str], ...] = ()) -> Response:
    """A short text response (errors, refusals)."""
    return Response(status, (("Content-Type", _PLAIN), *extra, ("Content-Length", str(len(text)))), text)
