"""``PageViewMiddleware``: pure ASGI middleware that sends ``$pageview`` for page loads the server answers.

A page view is a GET whose response is 2xx with ``Content-Type: text/html`` and whose path is not an asset,
health or metrics path (``exclude``). JSON APIs, assets and probes are never counted. The event is queued after
the response's last byte was handed to the server, so it adds nothing to the response time, and it carries
``$current_url`` (scheme, host and path; the query string is left out because it can carry tokens or emails),
``page_section`` and, for a signed-in user, their ``$groups``.

The signed-in user comes from ``user(scope)`` (default: ``request.state.analytics_user``, which the
service's authentication sets to a ``User``). Anonymous visitors are sent without a person profile and with a
random per-request id; no cookie is set and nothing is stored.

Also opens the request context (``telemetry.context``, shared with the logs), so ``analytics.capture`` calls
and ``snippet`` inside the request get the route's section and the per-request anonymous id. Disabled
analytics: a pass-through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from telemetry.analytics.client import Analytics
from telemetry.analytics.identity import User
from telemetry.context import enter_request, exit_request
from telemetry.types import ASGIApp, Message, Receive, Scope, Send

_log = logging.getLogger(__name__)

# Paths whose HTML responses are not page views (segment prefixes, as in the section rules).
DEFAULT_EXCLUDE = ("/static", "/assets", "/health", "/healthz", "/ready", "/readyz", "/live", "/livez",
                   "/metrics", "/favicon.ico", "/robots.txt")
STATE_USER = "analytics_user"


def state_user(scope: Scope) -> User | None:
    """The default user lookup: ``request.state.analytics_user`` (Starlette keeps it in ``scope["state"]``)."""
    state = scope.get("state")
    user = state.get(STATE_USER) if isinstance(state, dict) else None
    return user if isinstance(user, User) else None


def _is_html(headers: Any) -> bool:
    for name, value in headers or ():
        if name == b"content-type":
            return bool(value[:9].lower() == b"text/html")
    return False


def _url(scope: Scope) -> str:
    host = ""
    for name, value in scope.get("headers") or ():
        if name == b"host":
            host = value.decode("latin-1")
            break
    if not host and scope.get("server"):
        server_host, port = scope["server"][0], scope["server"][1]
        host = f"{server_host}:{port}" if port else str(server_host)
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}{scope.get('path', '')}"


class PageViewMiddleware:
    """``app.add_middleware(PageViewMiddleware, analytics=analytics)``; optional ``user=callable(scope)``
    returning the signed-in ``User`` or None, and ``exclude`` path prefixes that are never page views."""

    def __init__(self, app: ASGIApp, analytics: Analytics, *,
                 user: Callable[[Scope], User | None] = state_user,
                 exclude: Iterable[str] = DEFAULT_EXCLUDE) -> None:
        self.app = app
        self.analytics = analytics
        self.user = user
        exclude = [p.rstrip("/") or "/" for p in exclude]
        # Whole path segments, as in the section rules: "/health" and "/health/..." but not "/healthy".
        self._excluded_exact = frozenset(exclude)
        self._excluded_prefixes = tuple(p + "/" for p in exclude)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.analytics.enabled:
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        token = enter_request(route=path)
        try:
            if (scope.get("method") != "GET" or path in self._excluded_exact
                    or path.startswith(self._excluded_prefixes)):
                await self.app(scope, receive, send)
                return
            page = False

            async def send_wrapper(message: Message) -> None:
                nonlocal page
                if message["type"] == "http.response.start":
                    page = 200 <= message.get("status", 0) < 300 and _is_html(message.get("headers"))
                await send(message)
                if page and message["type"] == "http.response.body" and not message.get("more_body", False):
                    page = False
                    self._page_view(scope, path)

            await self.app(scope, receive, send_wrapper)
        finally:
            exit_request(token)

    def _page_view(self, scope: Scope, path: str) -> None:
        try:
            user = self.user(scope)
        except Exception:
            _log.exception("analytics: looking up the signed-in user failed; page view sent as anonymous")
            user = None
        self.analytics.page_view(_url(scope), route=path, user=user)
