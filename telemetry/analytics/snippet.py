"""``snippet()``: the posthog-js initialisation a server-rendered page puts in its ``<head>``.

What it renders, for the page's route and (optionally) the signed-in user:
- a ``<script src>`` loading posthog-js (``TUIST_POSTHOG_SCRIPT_URL``, default ``{TUIST_POSTHOG_URL}/static/array.js``);
- ``posthog.init`` with ``api_host`` = TUIST_POSTHOG_URL, ``person_profiles: "identified_only"``, the deny-list as
  ``property_denylist``, a bootstrapped distinct id (the user id, or the request's random anonymous id shared
  with the server's ``$pageview``), and ``persistence: "memory"`` for anonymous visitors so posthog-js writes no
  cookie and no localStorage entry for them (signed-in users keep posthog-js's default persistence);
- ``page_section`` registered as a super property, so every browser event carries it;
- for a signed-in user: ``identify`` (id, email), ``alias`` (account name) and ``group`` (organization and
  project, with their names).

Page views come from the server (``PageViewMiddleware``), so the snippet turns posthog-js's own page view off
by default (``capture_pageview=True`` for pages that navigate without a server page load). Every value is
JSON-encoded with ``<``, ``>``, ``&`` and the JavaScript line separators escaped, and attributes are
HTML-escaped, so no value can close the script element or inject markup. Disabled analytics: ``""``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

from telemetry.analytics.client import Analytics
from telemetry.analytics.events import PAGE_SECTION
from telemetry.analytics.identity import User
from telemetry.context import current_request

_JS_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026",
               0x2028: "\\u2028", 0x2029: "\\u2029"}

# Runs after posthog-js loaded; ``c`` is the JSON config below. Kept ES5 so any browser parses it.
_INIT_JS = (
    "(function(c){var p=window.posthog;if(!p||!p.init){return;}"
    "p.init(c.token,c.options);"
    "p.register(c.props);"
    "var u=c.user;if(u){"
    "p.identify(u.id,u.person);"
    "if(u.alias){p.alias(u.alias);}"
    "for(var i=0;i<u.groups.length;i++){var g=u.groups[i];p.group(g[0],g[1],{name:g[1]});}"
    "}})"
)


_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)  # made once: json.dumps makes one per call


def js_json(value: Any) -> str:
    """JSON that is safe inside an inline ``<script>``: cannot end the element or break the line."""
    return _ENCODER.encode(value).translate(_JS_ESCAPES)


def snippet(analytics: Analytics, route: str | None = None, user: User | None = None, *,
            anonymous_id: str | None = None, nonce: str | None = None, capture_pageview: bool = False,
            options: Mapping[str, Any] | None = None) -> str:
    """The posthog-js ``<script>`` elements for a page, or ``""`` when analytics are disabled.

    ``route``: the page's path (default: the current request's, under ``PageViewMiddleware``).
    ``user``: the signed-in user, or None for an anonymous visitor.
    ``anonymous_id``: the anonymous visitor's bootstrapped id (default: the current request's random id).
    ``nonce``: a CSP nonce for both script elements. ``options``: extra ``posthog.init`` options (win).
    """
    if not analytics.enabled:
        return ""
    request = current_request()
    if route is None and request is not None:
        route = request.route
    init: dict[str, Any] = {
        "api_host": analytics.url,
        "person_profiles": "identified_only",
        "capture_pageview": capture_pageview,
        "disable_surveys": True,
        "disable_session_recording": True,
        "advanced_disable_flags": True,
        "disable_external_dependency_loading": True,
    }
    if analytics.deny_properties:
        init["property_denylist"] = sorted(analytics.deny_properties)
    config: dict[str, Any] = {"token": analytics.api_key, "props": {PAGE_SECTION: analytics.section(route)}}
    if user is None:
        init["persistence"] = "memory"
        if anonymous_id is None and request is not None:
            anonymous_id = request.anonymous_id
        if anonymous_id:
            init["bootstrap"] = {"distinctID": anonymous_id}
    else:
        init["bootstrap"] = {"distinctID": user.distinct_id, "isIdentifiedID": True}
        person = {"email": user.email} if user.email and "email" not in analytics.deny_properties else {}
        config["user"] = {"id": user.distinct_id, "person": person, "alias": user.account_name,
                          "groups": [[t, k] for t, k in user.groups().items()]}
    init.update(options or {})
    config["options"] = init
    nonce_attr = f' nonce="{html.escape(nonce, quote=True)}"' if nonce else ""
    return (f'<script src="{html.escape(analytics.script_url, quote=True)}"{nonce_attr}></script>\n'
            f"<script{nonce_attr}>{_INIT_JS}({js_json(config)});</script>")
