"""Flask: ``instrument(app)`` records the inbound request metrics, request ids and access lines of
``telemetry.instrumentation.wsgi`` for a Flask app, labelled with Flask's url rule (``/items/<int:item_id>``,
blueprint prefixes included) rather than the raw path. The rule is read from the request werkzeug keeps in
the environ when the app starts its response (no ``before_request`` hook: that costs more). Needs the
``flask`` extra."""

from __future__ import annotations

from typing import Any

from telemetry.instrumentation.wsgi import WSGIMiddleware, mounted
from telemetry.registry import Registry
from telemetry.types import Environ

_INSTRUMENTED = "telemetry.instrumented"


def url_rule(environ: Environ) -> str | None:
    """The url rule Flask matched, read from the request werkzeug keeps in ``environ`` (Flask's request
    context is still open when the app starts its response); ``SCRIPT_NAME`` in front, as for every WSGI app."""
    request = environ.get("werkzeug.request")
    rule = getattr(request, "url_rule", None)
    return None if rule is None else mounted(environ, rule.rule)


def instrument(app: Any, *, registry: Registry | None = None, access_log: bool = True) -> Any:
    """Wrap ``app.wsgi_app`` in ``WSGIMiddleware`` and note each request's url rule for it; returns ``app``.
    Idempotent. Requests no rule matched (404s, and 405s, for which Flask matches no rule) are labelled
    ``unmatched``."""
    import flask

    if not isinstance(app, flask.Flask):
        raise TypeError(f"instrument() accepts a flask.Flask app, not {type(app).__name__}")
    if app.extensions.get(_INSTRUMENTED):
        return app

    app.wsgi_app = WSGIMiddleware(app.wsgi_app, registry=registry, route_of=url_rule,  # type: ignore[method-assign]
                                  access_log=access_log)
    app.extensions[_INSTRUMENTED] = True
    return app
