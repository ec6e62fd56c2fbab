"""Django: ``RouteMiddleware`` notes each request's resolved route (``request.resolver_match.route``:
``items/<int:item_id>``, as written in ``urls.py``, include() prefixes joined) for
``telemetry.instrumentation.wsgi.WSGIMiddleware``, which records the inbound request metrics, request ids and
access lines. Needs the ``django`` extra.

    # settings.py
    MIDDLEWARE = ["telemetry.instrumentation.django.RouteMiddleware", ...]
    # wsgi.py
    from django.core.wsgi import get_wsgi_application
    from telemetry.instrumentation.wsgi import instrument_wsgi
    application = instrument_wsgi(get_wsgi_application())
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from telemetry.instrumentation.wsgi import set_route


class RouteMiddleware:
    """A Django middleware that writes the resolved route's template where ``WSGIMiddleware`` reads it.
    Requests no URL pattern matched (404s) are labelled ``unmatched``."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        return self.get_response(request)

    def process_view(self, request: Any, view_func: Any, view_args: Any, view_kwargs: Any) -> None:
        # Called once URL resolution is done, before the view runs (so a view that raises is labelled too).
        match = getattr(request, "resolver_match", None)
        route = getattr(match, "route", None)
        if isinstance(route, str):
            set_route(request.environ, route)
