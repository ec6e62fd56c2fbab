"""Flask: ``instrument(app)`` records the inbound request metrics, request ids and access lines of
``telemetry.instrumentation.wsgi`` for a Flask app, labelled with Flask's url rule (``/items/<int:item_id>``,
blueprint prefixes included) rather than the raw path. Needs the ``flask`` extra."""

from __future__ import annotations

from typing import Any

from telemetry.instrumentation.wsgi import WSGIMiddleware, set_route
from telemetry.registry import Registry

_INSTRUMENTED = "telemetry.instrumented"


def instrument(app: Any, *, registry: Registry | None = None, access_log: bool = True) -> Any:
    """Wrap ``app.wsgi_app`` in ``WSGIMiddleware`` and note each request's url rule for it; returns ``app``.
    Idempotent. Requests no rule matched (404s, and 405s, for which Flask matches no rule) are labelled
    ``unmatched``."""
    import flask

    if not isinstance(app, flask.Flask):
        raise TypeError(f"instrument() accepts a flask.Flask app, not {type(app).__name__}")
    if app.extensions.get(_INSTRUMENTED):
        return app

    def note_route() -> None:
        # before_request runs once the request context matched its rule, for every request (a routing error
        # is raised only later, by dispatch).
        rule = flask.request.url_rule
        if rule is not None:
            set_route(flask.request.environ, rule.rule)

    app.before_request(note_route)
    app.wsgi_app = WSGIMiddleware(app.wsgi_app, registry=registry, access_log=access_log)  # type: ignore[method-assign]
    app.extensions[_INSTRUMENTED] = True
    return app
