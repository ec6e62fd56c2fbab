"""Inbound HTTP for WSGI apps on a real server: a Flask app (``telemetry.instrumentation.flask.instrument``,
served at the root and mounted under ``/mounted`` by werkzeug's ``DispatcherMiddleware``) and a Django app
(``RouteMiddleware`` + ``instrument_wsgi``), each served by wsgiref in a thread on a free loopback port, and
the Flask app under asgiref's ``WsgiToAsgi``.
/metrics is scraped over HTTP: route templates (Flask's url rules, Django's routes), statuses including 500s,
method labels, the request id header and the access log lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest
from asgiref.wsgi import WsgiToAsgi

from telemetry import logs
from telemetry.instrumentation.inbound import ACCESS_LOGGER, OTHER_METHOD, UNMATCHED_ROUTE
from telemetry.instrumentation.wsgi import instrument_wsgi
from telemetry.registry import Registry
from telemetry.setup import Telemetry
from telemetry.testing import isolated, sample_total, sample_value, wait_for
from telemetry.types import WSGIApp


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # wsgiref's own access line to stderr
        pass


def flask_app(registry: Registry) -> WSGIApp:
    import flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from telemetry.instrumentation.flask import instrument

    app = flask.Flask("test_wsgi_flask")
    api = flask.Blueprint("api", __name__, url_prefix="/api")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        logging.getLogger("test.wsgi.app").info("handling item")
        return {"item_id": item_id}

    @app.route("/any", methods=["GET", "PROPFIND"])
    def any_method() -> str:
        return flask.request.method

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    @app.get("/stream")
    def stream() -> Any:
        return flask.Response(iter([b"a", b"b", b"c"]))

    @api.post("/runs/<run_id>")
    def run(run_id: str) -> Any:
        return {"run_id": run_id}, 201

    app.register_blueprint(api)
    instrument(app, registry=registry)
    instrument(app, registry=registry)  # idempotent: still one middleware
    # The same app at the root and under /mounted (SCRIPT_NAME=/mounted)
    return DispatcherMiddleware(app, {"/mounted": app})  # type: ignore[no-any-return]


def django_app() -> WSGIApp:
    import django
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application
    from django.http import HttpRequest, HttpResponse, JsonResponse
    from django.urls import include, path, re_path
    from django.views.decorators.http import require_POST

    def thing(request: HttpRequest, thing_id: int) -> HttpResponse:
        return JsonResponse({"thing_id": thing_id})

    @require_POST
    def create(request: HttpRequest, project: str) -> HttpResponse:
        return JsonResponse({"project": project}, status=201)

    def explode(request: HttpRequest) -> HttpResponse:
        raise RuntimeError("explode")

    def legacy(request: HttpRequest, year: str) -> HttpResponse:
        return HttpResponse(year)

    projects = [path("<slug:project>/runs", create)]
    module = type("urls", (), {})()
    module.urlpatterns = [path("things/<int:thing_id>", thing), path("projects/", include(projects)),
                          path("explode", explode), re_path(r"^legacy/(?P<year>[0-9]{4})/$", legacy)]
    settings.configure(DEBUG=False, SECRET_KEY="test", ALLOWED_HOSTS=["127.0.0.1"], ROOT_URLCONF=module,
                       MIDDLEWARE=["telemetry.instrumentation.django.RouteMiddleware"], INSTALLED_APPS=[],
                       DATABASES={}, LOGGING_CONFIG=None)
    django.setup()
    logging.getLogger("django.request").disabled = True  # its 500 tracebacks are expected here
    return get_wsgi_application()


@dataclass
class Served:
    t: Telemetry
    flask: str
    django: str
    flask_app: WSGIApp
    log: io.StringIO


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logs.JsonFormatter())
    for name in (ACCESS_LOGGER, "test.wsgi.app"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    servers: list[WSGIServer] = []
    with isolated(serve=True, runtime_metrics=False) as t:
        urls = []
        flask = flask_app(t.registry)
        for app in (flask, instrument_wsgi(django_app(), registry=t.registry)):
            server = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
            urls.append(f"http://127.0.0.1:{server.server_port}")
        try:
            yield Served(t, urls[0], urls[1], flask, log)
        finally:
            for server in servers:
                server.shutdown()
                server.server_close()
            for name in (ACCESS_LOGGER, "test.wsgi.app"):
                logging.getLogger(name).removeHandler(handler)


def scrape(served: Served, route: str, count: float) -> str:
    """/metrics once it shows ``count`` requests for ``route`` (recorded when the server closes the response)."""
    assert served.t.metrics_url
    return wait_for(lambda: (lambda s: s if sample_total(s, "http_requests_total", route=route) >= count else "")(
        httpx.get(served.t.metrics_url).text), what=f"{count} requests for {route}")


def access_line(served: Served, request_id: str, message: str = "request completed") -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for line in served.log.getvalue().splitlines():
            record = json.loads(line)
            if record.get("request_id") == request_id and record["message"] == message:
                return record  # type: ignore[no-any-return]
        return None
    return wait_for(find, what=f"the {message!r} line of {request_id}")


def test_flask_under_wsgi_to_asgi_keeps_its_url_rules(served: Served) -> None:
    # asgiref's adapter never calls the response's close(): the request is recorded when its body was sent.
    # (Driven in-process through httpx's ASGI transport: asgiref's thread executor and a uvicorn server in a
    # test thread do not get along.)
    async def requests() -> None:
        transport = httpx.ASGITransport(app=WsgiToAsgi(served.flask_app))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            for i in (7, 8):
                response = await client.get(f"/mounted/items/{i}", headers={"x-request-id": f"asgi-{i}"})
                assert response.json() == {"item_id": i} and response.headers["x-request-id"] == f"asgi-{i}"
    asyncio.run(requests())
    text = scrape(served, "/mounted/items/<int:item_id>", 2)
    assert sample_value(text, "http_requests_total", method="GET", route="/mounted/items/<int:item_id>",
                        status="200") == 2
    assert access_line(served, "asgi-8")["route"] == "/mounted/items/<int:item_id>"


def test_flask_routes_statuses_and_methods(served: Served) -> None:
    with httpx.Client(base_url=served.flask) as client:
        for i in (1, 2, 3):
            assert client.get(f"/items/{i}").json() == {"item_id": i}
        assert client.get("/mounted/items/4").json() == {"item_id": 4}  # 2 more from the WsgiToAsgi test
        assert client.post("/api/runs/r-1").status_code == 201
        assert client.request("PROPFIND", "/any").text == "PROPFIND"
        assert client.get("/stream").text == "abc"
        assert client.get("/boom").status_code == 500
        for path in ("/nope", "/items/x", "/mounted/nope"):
            assert client.get(path).status_code == 404
        assert client.delete("/items/1").status_code == 405
    text = scrape(served, UNMATCHED_ROUTE, 4)
    assert sample_value(text, "http_requests_total", method="GET", route="/items/<int:item_id>", status="200") == 3
    assert sample_value(text, "http_requests_total", method="GET", route="/mounted/items/<int:item_id>",
                        status="200") == 3
    assert sample_value(text, "http_requests_total", method="POST", route="/api/runs/<run_id>", status="201") == 1
    assert sample_value(text, "http_requests_total", method=OTHER_METHOD, route="/any", status="200") == 1
    assert sample_value(text, "http_requests_total", method="GET", route="/stream", status="200") == 1
    assert sample_value(text, "http_requests_total", method="GET", route="/boom", status="500") == 1
    assert sample_total(text, "http_requests_total", route=UNMATCHED_ROUTE, status="404") == 3  # /mounted/nope too
    assert sample_value(text, "http_requests_total", method="DELETE", route=UNMATCHED_ROUTE, status="405") == 1
    assert sample_value(text, "http_request_duration_seconds_count", method="GET",
                        route="/items/<int:item_id>") == 3
    assert not re.search(r'route="[^"]*(/\d|nope|r-1)', text)


def test_flask_request_ids_and_access_lines(served: Served) -> None:
    given = httpx.get(f"{served.flask}/items/42", headers={"x-request-id": "flask-42"})
    assert given.headers["x-request-id"] == "flask-42"
    generated = httpx.get(f"{served.flask}/items/43", headers={"x-request-id": "bad id with spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    access = access_line(served, "flask-42")
    assert access["method"] == "GET" and access["route"] == "/items/<int:item_id>" and access["status"] == 200
    assert access["level"] == "info" and access["duration_ms"] > 0
    assert access_line(served, "flask-42", "handling item")["logger"] == "test.wsgi.app"  # the app's own line
    httpx.get(f"{served.flask}/boom", headers={"x-request-id": "flask-boom"})
    boom = access_line(served, "flask-boom")
    assert boom["level"] == "error" and boom["status"] == 500 and boom["route"] == "/boom"


def test_django_routes_statuses_and_methods(served: Served) -> None:
    with httpx.Client(base_url=served.django) as client:
        for i in (1, 2):
            assert client.get(f"/things/{i}").json() == {"thing_id": i}
        assert client.post("/projects/acme/runs").json() == {"project": "acme"}
        assert client.get("/projects/acme/runs").status_code == 405  # matched, wrong method
        assert client.get("/legacy/2024/").text == "2024"
        assert client.get("/explode").status_code == 500
    text = scrape(served, "/projects/<slug:project>/runs", 2)
    assert sample_value(text, "http_requests_total", method="GET", route="/things/<int:thing_id>", status="200") == 2
    assert sample_value(text, "http_requests_total", method="POST", route="/projects/<slug:project>/runs",
                        status="201") == 1
    assert sample_value(text, "http_requests_total", method="GET", route="/projects/<slug:project>/runs",
                        status="405") == 1
    assert sample_value(text, "http_requests_total", method="GET", route="/^legacy/(?P<year>[0-9]{4})/$",
                        status="200") == 1
    assert sample_value(text, "http_requests_total", method="GET", route="/explode", status="500") == 1


def test_django_request_ids_and_access_lines(served: Served) -> None:
    response = httpx.post(f"{served.django}/projects/tuist/runs", headers={"x-request-id": "django-1"})
    assert response.status_code == 201 and response.headers["x-request-id"] == "django-1"
    access = access_line(served, "django-1")
    assert access["method"] == "POST" and access["route"] == "/projects/<slug:project>/runs"
    assert access["status"] == 201 and access["duration_ms"] > 0
    assert re.fullmatch(r"[0-9a-f]{32}", httpx.get(f"{served.django}/things/5").headers["x-request-id"])
    assert httpx.get(f"{served.django}/nope/1", headers={"x-request-id": "django-404"}).status_code == 404
    missing = access_line(served, "django-404")
    assert missing["route"] == UNMATCHED_ROUTE and missing["status"] == 404  # 404s share Flask's series here
