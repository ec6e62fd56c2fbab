"""The HTML pages: the marketing page ``/``, a project dashboard ``/dashboard/{account}/{project}`` for the
signed-in user (session cookie), and the API docs ``/api/docs``.

Each page's ``<head>`` carries the analytics snippet (empty when analytics are off); ``page()`` is the one
place that builds it. The dashboard's numbers come from the database, cached in Redis when it is configured
and read from the database alone when Redis is down.
"""

from __future__ import annotations

import html
import json
import logging
from typing import Any

from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from service import auth
from service.api import service_of
from service.components import Service
from service.db import Preview, Run
from telemetry.analytics import User as AnalyticsUser
from telemetry.analytics import snippet

_log = logging.getLogger("service.pages")
STATS_TTL_SECONDS = 5


def page(request: Request, route: str, title: str, body: str, *, user: AnalyticsUser | None = None,
         status: int = 200) -> HTMLResponse:
    head = snippet(service_of(request).analytics, route=route, user=user)
    return HTMLResponse(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)} · Tuist reference service</title>{head}</head>"
        f"<body><header><a href=\"/\">Tuist reference service</a> · <a href=\"/api/docs\">API</a></header>"
        f"<main>{body}</main></body></html>", status_code=status)


async def home(request: Request) -> Response:
    service = service_of(request)
    body = ("<h1>Build faster with a shared binary cache</h1>"
            "<p>This service plays the Tuist server's part: runs, binary cache, previews and accounts, "
            "with every documented metric on "
            f"<a href=\"{html.escape(service.telemetry.metrics_url or '')}\">/metrics</a>.</p>"
            "<p><a href=\"/health/ready\">Readiness</a> · <a href=\"/health/live\">Liveness</a></p>")
    return page(request, "/", "Home", body)


API_DOCS: tuple[tuple[str, str, str], ...] = (
    ("POST", "/api/auth/refresh_token", "Exchange a refresh token ({\"refresh_token\"}) for new tokens. "
                                        "Header x-tuist-cli-version."),
    ("GET", "/api/projects", "Projects the caller can reach."),
    ("POST", "/api/projects", "Create a project: {\"account\", \"name\"}."),
    ("POST", "/api/projects/{account}/{project}/runs", "Report a CLI run: {\"name\", \"is_ci\", \"status\", "
                                                       "\"duration_ms\"}."),
    ("GET", "/api/projects/{account}/{project}/cache/{hash}", "Download an artifact (node-local tier, then "
                                                              "the artifact store, else 404)."),
    ("POST", "/api/projects/{account}/{project}/cache/{hash}/multipart/start", "Start a multipart upload."),
    ("POST", "/api/projects/{account}/{project}/cache/{hash}/multipart/part", "Presigned URL for a part: "
                                                                              "{\"upload_id\", \"part_number\"}."),
    ("POST", "/api/projects/{account}/{project}/cache/{hash}/multipart/complete", "Complete an upload: "
                                                                                  "{\"upload_id\", \"parts\"}."),
    ("DELETE", "/api/projects/{account}/{project}/cache", "Delete every artifact of a project."),
    ("POST", "/api/projects/{account}/{project}/previews", "Upload a preview archive (raw body, "
                                                           "?display_name=)."),
    ("GET", "/api/projects/{account}/{project}/previews/{preview_id}", "A preview's manifest and a "
                                                                       "presigned download URL."),
    ("GET", "/health/live", "Liveness: the process answers."),
    ("GET", "/health/ready", "Readiness: database SELECT 1, Redis PING when configured."),
)


async def api_docs(request: Request) -> Response:
    rows = "".join(f"<tr><td>{m}</td><td><code>{html.escape(p)}</code></td><td>{html.escape(d)}</td></tr>"
                   for m, p, d in API_DOCS)
    body = ("<h1>API</h1><p>Authenticate with <code>Authorization: Bearer &lt;access token&gt;</code>. Errors "
            "are JSON: <code>{\"error\": ..., \"status\": ...}</code>.</p>"
            f"<table><tr><th>Method</th><th>Path</th><th>What</th></tr>{rows}</table>")
    return page(request, "/api/docs", "API", body, user=await run_in_threadpool(_optional_user, request))


def _optional_user(request: Request) -> AnalyticsUser | None:
    token = request.cookies.get(auth.SESSION_COOKIE, "")
    if not token:
        return None
    service = service_of(request)
    with service.db.session() as s:
        who = auth.caller_for(s, token)
    if who is None:
        return None
    user = service.analytics_user(who.user_id, who.email, who.handle)
    request.state.analytics_user = user
    return user


def _stats(service: Service, project_id: int) -> dict[str, Any]:
    """Run and preview counts; cached in Redis for a few seconds when Redis is configured and up."""
    key = f"dashboard:stats:{project_id}"
    if service.redis is not None:
        try:
            cached = service.redis.get(key)
            if cached:
                return json.loads(cached)  # type: ignore[no-any-return]
        except Exception as exc:  # Redis down: serve from the database
            _log.warning("redis unavailable for dashboard stats: %s", exc)
    with service.db.session() as s:
        runs = s.scalar(select(func.count()).select_from(Run).where(Run.project_id == project_id)) or 0
        failed = s.scalar(select(func.count()).select_from(Run).where(Run.project_id == project_id,
                                                                      Run.status == 1)) or 0
        previews = s.scalar(select(func.count()).select_from(Preview).where(Preview.project_id == project_id)) or 0
    stats = {"runs": runs, "failed_runs": failed, "previews": previews}
    if service.redis is not None:
        try:
            service.redis.setex(key, STATS_TTL_SECONDS, json.dumps(stats))
        except Exception as exc:
            _log.warning("redis unavailable for dashboard stats: %s", exc)
    return stats


async def dashboard(request: Request) -> Response:
    account, name = request.path_params["account"], request.path_params["project"]
    service = service_of(request)
    route = "/dashboard/{account}/{project}"

    def work() -> Response:
        token = request.cookies.get(auth.SESSION_COOKIE, "")
        with service.db.session() as s:
            who = auth.caller_for(s, token) if token else None
            project = auth.project_for(s, who.user_id, account, name) if who else None
        if who is None:
            return page(request, route, "Sign in", "<h1>Sign in</h1><p>Sign in to see this project.</p>",
                        status=401)
        slug = f"{account}/{name}"
        user = service.analytics_user(who.user_id, who.email, who.handle, slug)
        request.state.analytics_user = user
        if project is None:
            return page(request, route, "Not found", f"<h1>No project {html.escape(slug)}</h1>", user=user,
                        status=404)
        stats = _stats(service, project.id)
        body = (f"<h1>{html.escape(slug)}</h1><dl><dt>Runs</dt><dd>{stats['runs']}</dd>"
                f"<dt>Failed runs</dt><dd>{stats['failed_runs']}</dd>"
                f"<dt>Previews</dt><dd>{stats['previews']}</dd></dl>")
        return page(request, route, slug, body, user=user)
    return await run_in_threadpool(work)
