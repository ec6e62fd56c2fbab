"""The current request, as analytics needs it: its route and a per-request anonymous id.

``PageViewMiddleware`` sets it for each HTTP request, so events captured while handling the request get the
page's section without passing the route around, and the page view and the browser snippet share one
anonymous id. The anonymous id is random, made only when asked for, and lives only as long as the request:
nothing is stored and no cookie is set.
"""

from __future__ import annotations

import contextvars
import uuid


class RequestContext:
    """The route of the request being handled and, on demand, its anonymous id."""

    __slots__ = ("_anonymous_id", "route")

    def __init__(self, route: str) -> None:
        self.route = route
        self._anonymous_id: str | None = None

    @property
    def anonymous_id(self) -> str:
        if self._anonymous_id is None:
            self._anonymous_id = str(uuid.uuid4())
        return self._anonymous_id


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "telemetry_analytics_request", default=None)


def current_request() -> RequestContext | None:
    return _current.get()


def enter_request(route: str) -> contextvars.Token[RequestContext | None]:
    return _current.set(RequestContext(route))


def exit_request(token: contextvars.Token[RequestContext | None]) -> None:
    _current.reset(token)
