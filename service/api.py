"""The JSON API the Tuist CLI talks to: runs, binary cache (download tiers, multipart upload, delete),
previews, token refresh and projects. Each handler does the work the documented metrics describe.

Handlers are ``async`` only to read the body; the database, store and outbound HTTP work runs on a worker
thread (``blocking``), which carries the request's context (trace and log fields) with it.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service import auth
from service.components import Service
from service.db import Account, Preview, Project, Run
from service.inputs import MALFORMED, json_object, malformed
from service.storage import StoreError
from telemetry import logs
from telemetry.analytics import Event
from telemetry.tracing import capture_exception

_log = logging.getLogger("service.api")
T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]

_HASH = re.compile(r"[0-9a-f]{8,64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_PREVIEW_BYTES = 20 * 1024 * 1024


class InjectedFailure(RuntimeError):
    """Raised on purpose when SERVICE_FAILURE_RATE picks a request."""


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def blocking(func: Callable[..., T], *args: Any) -> T:
    return await run_in_threadpool(func, *args)


def api(handler: Handler) -> Handler:
    """Failure injection, error mapping and error reporting for one API handler."""
    @functools.wraps(handler)
    async def run(request: Request) -> Response:
        service = service_of(request)
        try:
            rate = service.settings.failure_rate
            if rate and service.random.random() < rate:
                raise InjectedFailure("failure injected by SERVICE_FAILURE_RATE")
            return await handler(request)
        except HTTPException:
            raise
        except StoreError as exc:
            return error(exc.status, str(exc))
        except Exception as exc:
            if malformed(exc):
                return error(400, MALFORMED)
            _log.error("unhandled error in %s", handler.__name__, exc_info=exc)
            capture_exception(exc)
            return error(500, "internal error")
    return run


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


def get(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    """A typed field of a JSON body; 422 naming the field when it is missing or of the wrong type."""
    if name not in body:
        if default is ...:
            raise HTTPException(422, f"{name} is required")
        return default
    value = body[name]
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise HTTPException(422, f"{name} must be a number")
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise HTTPException(422, f"{name} must be of type {expected}")
    return value


def caller(request: Request) -> auth.Caller:
    """The signed-in user (bearer token or session cookie), or 401."""
    cached = getattr(request.state, "caller", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    token = ""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        token = header[7:].strip()
    token = token or request.cookies.get(auth.SESSION_COOKIE, "")
    found = None
    if token:
        with service_of(request).db.session() as s:
            found = auth.caller_for(s, token)
    if found is None:
        raise HTTPException(401, "missing or invalid access token")
    request.state.caller = found
    logs.bind(user_id=found.user_id)
    return found


def project_slug(request: Request) -> tuple[str, str]:
    """The ``{account}/{project}`` of the path; 404 for one no account or project could be named."""
    account, project = request.path_params["account"], request.path_params["project"]
    if not (_NAME.fullmatch(account) and _NAME.fullmatch(project)):
        raise HTTPException(404, f"no project {account}/{project}")
    return account, project


def require_project(request: Request, who: auth.Caller) -> Project:
    account, name = project_slug(request)
    with service_of(request).db.session() as s:
        project = auth.project_for(s, who.user_id, account, name)
    if project is None:
        raise HTTPException(404, f"no project {account}/{name}")
    service = service_of(request)
    request.state.analytics_user = service.analytics_user(who.user_id, who.email, who.handle,
                                                          f"{account}/{name}")
    return project


def cache_key(request: Request) -> str:
    account, project = project_slug(request)
    digest = request.path_params["hash"]
    if not _HASH.fullmatch(digest):
        raise HTTPException(400, "the artifact hash must be 8 to 64 lowercase hex characters")
    return f"{account}/{project}/cache/{digest}"


# -- authentication -------------------------------------------------------------------------------------------
@api
async def refresh_token(request: Request) -> Response:
    body = await json_object(request)
    token = get(body, "refresh_token", str)
    version = auth.cli_version(request.headers.get(auth.CLI_VERSION_HEADER))
    service = service_of(request)

    def work() -> Response:
        try:
            with service.db.session() as s:
                who, access, new_refresh = auth.refresh(s, token)
        except auth.RefreshError as exc:
            service.recorders.auth.token_refresh_error(cli_version=version, reason=exc.reason)
            service.analytics.capture(Event.AUTHENTICATION_TOKEN_REFRESH_ERROR,
                                      properties={"reason": exc.reason, "cli_version": version})
            return error(401, str(exc))
        logs.bind(user_id=who.user_id)
        user = service.analytics_user(who.user_id, who.email, who.handle)
        service.analytics.sign_in(user)  # $identify (email), $create_alias (account name), group names
        service.analytics.capture(Event.USER_AUTHENTICATE, distinct_id=user, properties={"method": "refresh_token"})
        return JSONResponse({"access_token": access, "refresh_token": new_refresh})
    return await blocking(work)


# -- projects ----------------------------------------------------------------------------------------------------
@api
async def list_projects(request: Request) -> Response:
    service = service_of(request)

    def work() -> Response:
        who = caller(request)
        with service.db.session() as s:
            ids = auth.account_ids(s, who.user_id)
            rows = s.execute(select(Account.handle, Project.name).join(Project, Project.account_id == Account.id)
                             .where(Account.id.in_(ids)).order_by(Account.handle, Project.name)).all()
        return JSONResponse({"projects": [f"{a}/{p}" for a, p in rows]})
    return await blocking(work)


@api
async def create_project(request: Request) -> Response:
    body = await json_object(request)
    account, name = get(body, "account", str), get(body, "name", str)
    if not _NAME.fullmatch(name):
        raise HTTPException(422, "name must be 1-64 letters, digits, '.', '_' or '-'")
    service = service_of(request)

    def work() -> Response:
        who = caller(request)
        try:
            with service.db.session() as s:
                owner = s.execute(select(Account).where(Account.handle == account)).scalar_one_or_none()
                if owner is None or owner.id not in auth.account_ids(s, who.user_id):
                    return error(404, f"no account {account}")
                s.add(Project(account_id=owner.id, name=name))
        except IntegrityError:
            return error(409, f"project {account}/{name} already exists")
        user = service.analytics_user(who.user_id, who.email, who.handle, f"{account}/{name}")
        service.analytics.capture(Event.PROJECT_CREATE, distinct_id=user)
        for group_type, key in user.groups().items():  # name the new project's groups
            service.analytics.group_identify(group_type, key, distinct_id=user)
        return JSONResponse({"project": f"{account}/{name}"}, status_code=201)
    return await blocking(work)


# -- runs ----------------------------------------------------------------------------------------------------------
@api
async def report_run(request: Request) -> Response:
    body = await json_object(request)
    name = get(body, "name", str)
    is_ci = get(body, "is_ci", bool)
    status = get(body, "status", int)
    duration_ms = get(body, "duration_ms", (int, float))
    if not _NAME.fullmatch(name):
        raise HTTPException(422, "name must be a command name such as build or test")
    if status not in (0, 1):
        raise HTTPException(422, "status must be 0 (success) or 1 (failure)")
    if not 0 <= duration_ms < 86_400_000:
        raise HTTPException(422, "duration_ms must be from 0 to one day")
    version = auth.cli_version(request.headers.get(auth.CLI_VERSION_HEADER))
    service = service_of(request)

    def work() -> Response:
        who = caller(request)
        project = require_project(request, who)
        with service.db.session() as s:
            run = Run(project_id=project.id, user_id=who.user_id, name=name, is_ci=is_ci, status=status,
                      duration_ms=float(duration_ms), cli_version=version, created_at=time.time())
            s.add(run)
            s.flush()
            run_id = run.id
        service.recorders.runs.record(name, is_ci=is_ci, status=status, duration_ms=float(duration_ms))
        service.analytics.capture(Event.RUN_REPORT, distinct_id=request.state.analytics_user,
                                  properties={"name": name, "is_ci": is_ci, "status": status})
        return JSONResponse({"id": run_id}, status_code=201)
    return await blocking(work)


# -- binary cache ---------------------------------------------------------------------------------------------
@api
async def download_artifact(request: Request) -> Response:
    """Node-local tier first (local_hit), then the artifact store over presigned HTTP (remote_hit), else miss."""
    service = service_of(request)

    def work() -> Response:
        who = caller(request)
        require_project(request, who)
        key = cache_key(request)
        cache = service.recorders.cache
        data = service.node_cache.get(key)
        if data is not None:
            cache.event("local_hit")
        else:
            try:
                if not service.store.exists(key):
                    raise StoreError(404, "artifact not in the cache")
                size = service.store.object_size(key)
                response = service.http.get(service.store.presign_download(key))
                if response.status_code == 404:  # deleted between the check and the fetch
                    raise StoreError(404, "artifact not in the cache")
                response.raise_for_status()
            except StoreError as exc:
                if exc.status != 404:
                    raise
                cache.event("miss")
                return error(404, "artifact not in the cache")
            data = response.content
            if len(data) != size:
                raise RuntimeError(f"store returned {len(data)} bytes for {key}, expected {size}")
            service.node_cache.put(key, data)
            cache.event("remote_hit")
        cache.downloaded(len(data))
        return Response(data, media_type="application/octet-stream")
    return await blocking(work)


@api
async def start_upload(request: Request) -> Response:
    service = service_of(request)

    def work() -> Response:
        require_project(request, caller(request))
        upload_id = service.store.start_multipart(cache_key(request))
        return JSONResponse({"upload_id": upload_id}, status_code=201)
    return await blocking(work)


@api
async def part_url(request: Request) -> Response:
    body = await json_object(request)
    upload_id, part_number = get(body, "upload_id", str), get(body, "part_number", int)
    service = service_of(request)

    def work() -> Response:
        require_project(request, caller(request))
        url = service.store.presign_part(cache_key(request), upload_id, part_number)
        return JSONResponse({"url": url})
    return await blocking(work)


@api
async def complete_upload(request: Request) -> Response:
    body = await json_object(request)
    upload_id, parts = get(body, "upload_id", str), get(body, "parts", list)
    if not all(isinstance(p, int) and not isinstance(p, bool) for p in parts):
        raise HTTPException(422, "parts must be a list of part numbers")
    service = service_of(request)

    def work() -> Response:
        require_project(request, caller(request))
        key = cache_key(request)
        size = service.store.complete_multipart(key, upload_id, parts)
        service.recorders.cache.uploaded(size)
        return JSONResponse({"size": size})
    return await blocking(work)


@api
async def delete_cache(request: Request) -> Response:
    service = service_of(request)

    def work() -> Response:
        require_project(request, caller(request))
        slug = "/".join(project_slug(request))
        deleted = service.store.delete_all(slug)
        service.node_cache.discard_prefix(slug + "/")
        return JSONResponse({"deleted": deleted})
    return await blocking(work)


# -- previews -------------------------------------------------------------------------------------------------
def _upload_bytes(service: Service, key: str, data: bytes) -> int:
    """Write an object the way any client of the store does: start, presigned part PUT over HTTP, complete."""
    store = service.store
    upload_id = store.start_multipart(key)
    response = service.http.put(store.presign_part(key, upload_id, 1), content=data)
    response.raise_for_status()
    return store.complete_multipart(key, upload_id, [1])


@api
async def upload_preview(request: Request) -> Response:
    data = await request.body()
    if not data:
        raise HTTPException(400, "the preview archive is empty")
    if len(data) > MAX_PREVIEW_BYTES:
        raise HTTPException(413, f"previews are limited to {MAX_PREVIEW_BYTES} bytes")
    display_name = request.query_params.get("display_name", "App")[:128]
    service = service_of(request)

    def work() -> Response:
        who = caller(request)
        project = require_project(request, who)
        preview_id = uuid.uuid4().hex
        base = "/".join(project_slug(request)) + f"/previews/{preview_id}"
        size = _upload_bytes(service, f"{base}.zip", data)
        manifest = {"id": preview_id, "display_name": display_name, "size": size, "uploaded_by": who.handle}
        _upload_bytes(service, f"{base}.json", json.dumps(manifest).encode())
        with service.db.session() as s:
            s.add(Preview(id=preview_id, project_id=project.id, display_name=display_name, size=size,
                          created_at=time.time()))
        service.recorders.previews.uploaded()
        service.analytics.capture(Event.PREVIEW_UPLOAD, distinct_id=request.state.analytics_user,
                                  properties={"size": size})
        return JSONResponse({"id": preview_id, "size": size}, status_code=201)
    return await blocking(work)


@api
async def download_preview(request: Request) -> Response:
    preview_id = request.path_params["preview_id"]
    if not re.fullmatch(r"[0-9a-f]{32}", preview_id):
        raise HTTPException(400, "invalid preview id")
    service = service_of(request)

    def work() -> Response:
        project = require_project(request, caller(request))
        with service.db.session() as s:
            preview = s.get(Preview, preview_id)
        if preview is None or preview.project_id != project.id:
            return error(404, "no such preview")
        base = "/".join(project_slug(request)) + f"/previews/{preview_id}"
        manifest = json.loads(service.store.get_as_string(f"{base}.json"))
        url = service.store.presign_download(f"{base}.zip")
        service.recorders.previews.downloaded()
        service.analytics.capture(Event.PREVIEW_DOWNLOAD, distinct_id=request.state.analytics_user)
        return JSONResponse({"manifest": manifest, "url": url})
    return await blocking(work)
