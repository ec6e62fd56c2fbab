"""The current request's context, shared by structured logs and product analytics: one context variable.

``telemetry.instrumentation.asgi`` opens it for every HTTP request with the log fields (``request_id``,
``method``, ...); ``PageViewMiddleware`` opens a nested one with the route analytics use for ``page_section``.
A nested context shares its parent's log-field dict, so a ``telemetry.logs.bind()`` anywhere inside the request
is seen by the access log line, and the route of the innermost one wins. The anonymous id (for analytics) is
random, made only when asked for, and lives only as long as the request: nothing is stored, no cookie is set.

A worker thread (Starlette runs sync endpoints in a thread pool) gets a *copy* of the context, but the copy
points at the same objects, so what it binds is seen by the middleware.
"""

from __future__ import annotations

import contextvars
import uuid
from typing import Any


class RequestContext:
    """The request being handled: its log fields, its route (when known) and, on demand, its anonymous id."""

    __slots__ = ("_anonymous_id", "fields", "route")

    def __init__(self, fields: dict[str, Any], route: str | None = None) -> None:
        self.fields = fields
        self.route = route
        self._anonymous_id: str | None = None

    @property
    def anonymous_id(self) -> str:
        if self._anonymous_id is None:
            self._anonymous_id = str(uuid.uuid4())
        return self._anonymous_id


Token = contextvars.Token[RequestContext | None]
_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("telemetry_request",
                                                                                 default=None)


def current_request() -> RequestContext | None:
    return _current.get()


def enter_request(fields: dict[str, Any] | None = None, route: str | None = None) -> Token:
    """Open a request's context (pair with ``exit_request``). Inside another one, ``fields`` default to the
    outer context's dict (the same object) and ``route`` to its route."""
    parent = _current.get()
    if parent is not None:
        if fields is None:
            fields = parent.fields
        if route is None:
            route = parent.route
    return _current.set(RequestContext(fields if fields is not None else {}, route))


def exit_request(token: Token) -> None:
    _current.reset(token)
