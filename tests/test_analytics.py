"""Product analytics: gating, exact payloads at a real loopback capture endpoint, sections, deny-list,
page views through the ASGI middleware, the browser snippet's escaping, and the never-in-the-way guarantees
(host down, host black-holed, full queue, exceptions) with bounded shutdown."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.routing import Route

from telemetry.analytics import EVENTS, Analytics, Event, PageViewMiddleware, Sections, User, snippet
from telemetry.analytics.client import DROPPED_METRIC
from telemetry.config import ENV, Settings, SettingsError
from telemetry.registry import Registry
from telemetry.testing import wait_for
from tests.conftest import free_port
from tests.posthog_capture import BlackHole, CaptureServer

KEY = "phc_test_key"
# Addresses that appear in pages and URLs but are never connected to: a closed loopback port.
UNREACHED = f"127.0.0.1:{free_port()}"
ALICE = User(id=42, email="alice@example.com", account_name="alice", organization="tuist",
             project="tuist/app")
# posthog-python adds these to every event; their values depend on the machine and the moment.
VOLATILE_PROPS = {"$python_runtime", "$python_version", "$os", "$os_version", "$os_distro"}
LIB_PROPS = {"$lib": "posthog-python", "$geoip_disable": True, "$is_server": True}


def stable(event: dict[str, Any]) -> dict[str, Any]:
    """The event without its timestamp, uuid, library version and machine description."""
    props = {k: v for k, v in event["properties"].items() if k not in VOLATILE_PROPS and k != "$lib_version"}
    return {"event": event["event"], "distinct_id": event["distinct_id"], "properties": props}


def dropped(registry: Registry) -> dict[str, float]:
    return {c.labels[0]: c.value for c in registry.counter(DROPPED_METRIC).series()}


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


@pytest.fixture
def analytics(capture: CaptureServer, registry: Registry) -> Iterator[Analytics]:
    a = Analytics(KEY, capture.url, registry=registry, flush_interval=0.1)
    yield a
    a.shutdown(timeout=2)


# -- gating ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env, missing", [
    ({}, ["TUIST_POSTHOG_API_KEY", "TUIST_POSTHOG_URL"]),
    ({"TUIST_POSTHOG_URL": "URL"}, ["TUIST_POSTHOG_API_KEY"]),
    ({"TUIST_POSTHOG_API_KEY": KEY}, ["TUIST_POSTHOG_URL"]),
    ({"TUIST_POSTHOG_API_KEY": KEY, "TUIST_POSTHOG_URL": ""}, ["TUIST_POSTHOG_URL"]),
])
def test_disabled_unless_both_variables_are_set(env: dict[str, str], missing: list[str], capture: CaptureServer,
                                                registry: Registry, caplog: pytest.LogCaptureFixture) -> None:
    env = {k: (capture.url if v == "URL" else v) for k, v in env.items()}
    threads = {t.name for t in threading.enumerate()}
    with caplog.at_level(logging.INFO, logger="telemetry.analytics"):
        a = Analytics.from_settings(Settings.from_env(env), registry=registry)
    assert not a.enabled
    assert a._sender is None
    lines = [r for r in caplog.records if r.name.startswith("telemetry.analytics")]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert lines[0].getMessage() == (
        f"PostHog analytics disabled: {' and '.join(missing)} not set (both {ENV['posthog_api_key']} and "
        f"{ENV['posthog_url']} are needed)")
    # Every entry point is a no-op: nothing queued, no thread, no traffic, nothing counted.
    assert a.capture(Event.RUN_REPORT, distinct_id=ALICE) is False
    a.sign_in(ALICE)
    assert a.page_view(f"http://{UNREACHED}/", route="/") is False
    assert snippet(a, "/", ALICE) == ""
    a.shutdown()
    time.sleep(0.2)
    assert {t.name for t in threading.enumerate()} == threads
    assert capture.requests == []
    assert sum(dropped(registry).values()) == 0


def test_enabled_with_both_variables(capture: CaptureServer, registry: Registry,
                                     caplog: pytest.LogCaptureFixture) -> None:
    env = {"TUIST_POSTHOG_API_KEY": KEY, "TUIST_POSTHOG_URL": capture.url + "/"}
    with caplog.at_level(logging.INFO, logger="telemetry.analytics"):
        a = Analytics.from_settings(Settings.from_env(env), registry=registry, flush_interval=0.1)
    try:
        assert a.enabled and a.url == capture.url
        assert [r.getMessage() for r in caplog.records if r.name.startswith("telemetry.analytics")] == [
            f"PostHog analytics enabled: events go to {capture.url}"]
        assert a.capture(Event.USER_CREATE, distinct_id=ALICE)
        a.flush(5)
        (post,) = capture.posts
        assert post.path == "/batch/" and post.body["api_key"] == KEY
        assert post.headers["content-encoding"] == "gzip"  # gzip by default
    finally:
        a.shutdown(timeout=2)


# -- exact payloads -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gzip", [True, False])
def test_sign_in_sends_identify_alias_and_group_identify(gzip: bool, capture: CaptureServer,
                                                         registry: Registry) -> None:
    a = Analytics(KEY, capture.url, registry=registry, flush_interval=0.1, gzip=gzip)
    try:
        a.sign_in(ALICE, route="/dashboard/tuist/app")
        a.flush(5)
    finally:
        a.shutdown(timeout=2)
    assert all(("content-encoding" in p.headers) is gzip for p in capture.posts)
    groups = {"organization": "tuist", "project": "tuist/app"}
    common = {"page_section": "dashboard", **LIB_PROPS}
    assert [stable(e) for e in capture.events] == [
        {"event": "$identify", "distinct_id": "42",
         "properties": {"$set": {"email": "alice@example.com"}, "$groups": groups, **common}},
        {"event": "$create_alias", "distinct_id": "42",
         "properties": {"distinct_id": "42", "alias": "alice", **common}},
        {"event": "$groupidentify", "distinct_id": "42",
         "properties": {"$group_type": "organization", "$group_key": "tuist", "$group_set": {"name": "tuist"},
                        **common}},
        {"event": "$groupidentify", "distinct_id": "42",
         "properties": {"$group_type": "project", "$group_key": "tuist/app",
                        "$group_set": {"name": "tuist/app"}, **common}},
    ]
    for e in capture.events:
        uuid.UUID(e["uuid"])
        assert e["timestamp"].endswith("+00:00")
    assert sum(dropped(registry).values()) == 0


def test_custom_events_carry_groups_and_section(analytics: Analytics, capture: CaptureServer) -> None:
    assert analytics.capture(Event.RUN_REPORT, distinct_id=ALICE, properties={"name": "build", "is_ci": True},
                             route="/api/runs")
    assert analytics.capture("preview_download", distinct_id="7", route="/api/docs/previews")
    assert analytics.capture(Event.ORGANIZATION_CREATE, distinct_id=ALICE, groups={"organization": "new-org"},
                             route="/dashboard/orgs/new")
    analytics.group_identify("project", "tuist/cli", name="CLI", route="/dashboard")
    analytics.flush(5)
    assert [stable(e) for e in capture.events] == [
        {"event": "run_report", "distinct_id": "42",
         "properties": {"name": "build", "is_ci": True, "page_section": "marketing",
                        "$groups": {"organization": "tuist", "project": "tuist/app"}, **LIB_PROPS}},
        {"event": "preview_download", "distinct_id": "7",
         "properties": {"page_section": "api-docs", **LIB_PROPS}},
        {"event": "organization_create", "distinct_id": "42",
         "properties": {"page_section": "dashboard", "$groups": {"organization": "new-org"}, **LIB_PROPS}},
        {"event": "$groupidentify", "distinct_id": "$project_tuist/cli",
         "properties": {"$group_type": "project", "$group_key": "tuist/cli", "$group_set": {"name": "CLI"},
                        "page_section": "dashboard", **LIB_PROPS}},
    ]


def test_anonymous_events_have_no_person_profile(analytics: Analytics, capture: CaptureServer) -> None:
    assert analytics.capture("user_create", properties={"plan": "free"}, route="/")
    assert analytics.capture("user_create", route="/pricing")
    analytics.flush(5)
    first, second = capture.events
    assert stable(first)["properties"] == {"plan": "free", "page_section": "marketing",
                                           "$process_person_profile": False, **LIB_PROPS}
    # A fresh random id per event outside a request: nothing ties two anonymous events together.
    assert first["distinct_id"] != second["distinct_id"]
    uuid.UUID(first["distinct_id"])
    assert "email" not in json.dumps(capture.posts[0].body)


def test_unknown_event_names_are_sent_and_warned_once(analytics: Analytics, capture: CaptureServer,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="telemetry.analytics"):
        analytics.capture("something_new", distinct_id="1")
        analytics.capture("something_new", distinct_id="1")
    analytics.flush(5)
    assert [e["event"] for e in capture.events] == ["something_new", "something_new"]
    assert len([r for r in caplog.records if "something_new" in r.getMessage()]) == 1


def test_documented_events_match_the_docs() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "analytics.md").read_text()
    listed = dict(re.findall(r"^\| `([a-z_]+)` \| (.+?) \|$", doc, re.M))
    assert listed == dict(EVENTS)
    assert set(EVENTS) == {e.value for e in Event}


# -- privacy --------------------------------------------------------------------------------------------------
def test_deny_list_removes_properties_everywhere(capture: CaptureServer, registry: Registry) -> None:
    a = Analytics.from_settings(Settings.from_env({}, posthog_api_key=KEY, posthog_url=capture.url,
                                                  posthog_deny_properties="email, plan,$os"),
                                registry=registry, flush_interval=0.1)
    try:
        a.identify(ALICE, route="/dashboard")
        a.capture("run_report", distinct_id=ALICE, properties={"plan": "pro", "name": "test"})
        a.flush(5)
    finally:
        a.shutdown(timeout=2)
    identify, run = capture.events
    assert identify["properties"]["$set"] == {}
    assert "plan" not in run["properties"] and run["properties"]["name"] == "test"
    assert "$os" not in identify["properties"] and "$os" not in run["properties"]
    assert "alice@example.com" not in json.dumps(capture.posts[0].body)


def test_email_never_in_metric_labels(registry: Registry) -> None:
    from telemetry.catalogue import spec

    assert spec(DROPPED_METRIC).labels == ("reason",)
    assert set(spec(DROPPED_METRIC).allowed["reason"]) == {"queue_full", "send_failed", "error", "shutdown"}


# -- sections -------------------------------------------------------------------------------------------------
def test_default_sections() -> None:
    sections = Sections.parse(Settings().posthog_sections)
    assert sections("/") == "marketing"
    assert sections("/pricing") == "marketing"
    assert sections("/api/docs") == "api-docs"
    assert sections("/api/docs/runs") == "api-docs"
    assert sections("/api/runs") == "marketing"
    assert sections("/dashboard") == "dashboard"
    assert sections("/dashboard/tuist/app") == "dashboard"
    assert sections("/dashboards") == "marketing"  # whole path segments only
    assert sections(None) == "marketing"


def test_section_rules_longest_prefix_wins() -> None:
    sections = Sections.parse("/=site,/app=dashboard,/app/docs/=api-docs", default="x")
    assert sections("/app/docs/a") == "api-docs"
    assert sections("/app/settings") == "dashboard"
    assert sections("/blog") == "site"


@pytest.mark.parametrize("bad", ["dashboard", "dashboard=x", "/x=", "/x"])
def test_bad_section_rules_fail_at_startup_naming_the_variable(bad: str) -> None:
    with pytest.raises(SettingsError, match="TUIST_POSTHOG_SECTIONS"):
        Settings.from_env({"TUIST_POSTHOG_SECTIONS": bad})


def test_sections_from_settings(capture: CaptureServer, registry: Registry) -> None:
    a = Analytics.from_settings(Settings.from_env({"TUIST_POSTHOG_API_KEY": KEY, "TUIST_POSTHOG_URL": capture.url,
                                                   "TUIST_POSTHOG_SECTIONS": "/app=dashboard,/reference=api-docs"}),
                                registry=registry)
    try:
        assert [a.section(r) for r in ("/app/x", "/reference", "/dashboard")] == [
            "dashboard", "api-docs", "marketing"]
    finally:
        a.shutdown(timeout=1)


# -- page views (ASGI middleware) ------------------------------------------------------------------------------
def _app(analytics: Analytics) -> Starlette:
    async def page(request: Request) -> HTMLResponse:
        if request.query_params.get("signed_in"):
            request.state.analytics_user = ALICE
        analytics.capture(Event.PREVIEW_DOWNLOAD, distinct_id=ALICE)  # section from the request context
        return HTMLResponse("<html><head>" + snippet(analytics) + "</head></html>")

    async def api(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def missing(request: Request) -> HTMLResponse:
        return HTMLResponse("<p>not found</p>", status_code=404)

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    routes = [Route("/dashboard/{rest:path}", page), Route("/", page), Route("/api/docs", page),
              Route("/static/page.html", page), Route("/api/runs", api, methods=["GET", "POST"]),
              Route("/health", page), Route("/missing", missing), Route("/healthz", health),
              Route("/form", page, methods=["POST"])]
    app = Starlette(routes=routes)
    app.add_middleware(PageViewMiddleware, analytics=analytics)
    return app


async def _get_all(app: Starlette, requests: list[tuple[str, str]]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{UNREACHED}") as client:
        return [await client.request(method, url) for method, url in requests]


def test_page_views_only_for_successful_html_pages(analytics: Analytics, capture: CaptureServer) -> None:
    import asyncio

    responses = asyncio.run(_get_all(_app(analytics), [
        ("GET", "/?utm=x&email=alice@example.com"), ("GET", "/dashboard/tuist/app?signed_in=1"),
        ("GET", "/api/docs"), ("GET", "/api/runs"), ("POST", "/api/runs"), ("GET", "/missing"),
        ("GET", "/static/page.html"), ("GET", "/health"), ("GET", "/healthz"), ("POST", "/form"),
    ]))
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200, 404, 200, 200, 200, 200]
    analytics.flush(5)
    pageviews = [e for e in capture.events if e["event"] == "$pageview"]
    assert [stable(e)["properties"] for e in pageviews] == [
        {"$current_url": f"http://{UNREACHED}/", "page_section": "marketing", "$process_person_profile": False,
         **LIB_PROPS},
        {"$current_url": f"http://{UNREACHED}/dashboard/tuist/app", "page_section": "dashboard",
         "$groups": {"organization": "tuist", "project": "tuist/app"}, **LIB_PROPS},
        {"$current_url": f"http://{UNREACHED}/api/docs", "page_section": "api-docs",
         "$process_person_profile": False, **LIB_PROPS},
    ]
    assert pageviews[1]["distinct_id"] == "42"
    # The anonymous page view's id is the one bootstrapped into that page's snippet, and only lives there.
    bootstrapped = re.findall(r'"bootstrap":\{"distinctID":"([0-9a-f-]+)"\}', responses[0].text)
    assert bootstrapped == [pageviews[0]["distinct_id"]]
    assert "set-cookie" not in responses[0].headers
    # Custom events in a handler take the section of the request's route.
    sections = [e["properties"]["page_section"] for e in capture.events if e["event"] == "preview_download"]
    assert sections == ["marketing", "dashboard", "api-docs", "marketing", "marketing", "marketing"]


def test_middleware_is_a_pass_through_when_disabled(registry: Registry) -> None:
    import asyncio

    disabled = Analytics(registry=registry)
    (response,) = asyncio.run(_get_all(_app(disabled), [("GET", "/")]))
    assert response.status_code == 200 and "<script" not in response.text


# -- snippet --------------------------------------------------------------------------------------------------
def _config(html: str) -> dict[str, Any]:
    match = re.search(r"\}\)\((\{.*\})\);</script>$", html)
    assert match, html
    return dict(json.loads(match.group(1)))


def test_snippet_for_anonymous_visitor(analytics: Analytics) -> None:
    html = snippet(analytics, "/api/docs/runs", anonymous_id="anon-1")
    assert html.startswith(f'<script src="{analytics.url}/static/array.js"></script>\n<script>')
    assert _config(html) == {
        "token": KEY, "props": {"page_section": "api-docs"},
        "options": {"api_host": analytics.url, "person_profiles": "identified_only", "persistence": "memory",
                    "bootstrap": {"distinctID": "anon-1"}, "capture_pageview": False, "disable_surveys": True,
                    "disable_session_recording": True, "advanced_disable_flags": True,
                    "disable_external_dependency_loading": True}}


def test_snippet_for_signed_in_user(analytics: Analytics) -> None:
    config = _config(snippet(analytics, "/dashboard", ALICE, capture_pageview=True))
    assert config["user"] == {"id": "42", "person": {"email": "alice@example.com"}, "alias": "alice",
                              "groups": [["organization", "tuist"], ["project", "tuist/app"]]}
    assert config["options"]["bootstrap"] == {"distinctID": "42", "isIdentifiedID": True}
    assert "persistence" not in config["options"]
    assert config["options"]["capture_pageview"] is True
    assert config["props"] == {"page_section": "dashboard"}


def test_snippet_escapes_every_value(capture: CaptureServer, registry: Registry) -> None:
    evil = '</script><script>alert("x")</script>&\u2028'
    a = Analytics(KEY + evil, capture.url, registry=registry, script_url=f'https://{UNREACHED}/a.js?"><b>',
                  deny_properties=[evil])
    try:
        user = User(id=evil, email=evil, account_name=evil, organization=evil, project=evil)
        html = snippet(a, "/" + evil, user, nonce='n"><x>')
    finally:
        a.shutdown(timeout=1)
    # Exactly the two script elements we wrote; no value opens or closes an element or breaks a line.
    assert html.count("<script") == 2 and html.count("</script>") == 2
    assert "<b>" not in html and "<x>" not in html and "\u2028" not in html
    assert f'src="https://{UNREACHED}/a.js?&quot;&gt;&lt;b&gt;"' in html
    assert html.count(' nonce="n&quot;&gt;&lt;x&gt;"') == 2
    config = _config(html)  # and the values survive the round trip exactly
    assert config["token"] == KEY + evil
    assert config["user"]["id"] == evil and config["user"]["person"] == {"email": evil}
    assert config["user"]["groups"] == [["organization", evil], ["project", evil]]
    assert config["options"]["property_denylist"] == [evil.strip()]  # names are trimmed


# -- never in the way -----------------------------------------------------------------------------------------
def _flood(a: Analytics, n: int) -> float:
    """Capture n events; returns the slowest single call in seconds. The n calls together take well under a
    second (≈10 µs each): nothing waits for the network, which here refuses at once or never answers."""
    worst = 0.0
    begin = time.perf_counter()
    for i in range(n):
        start = time.perf_counter()
        assert a.capture(Event.RUN_REPORT, distinct_id=ALICE, properties={"i": i}) in (True, False)
        worst = max(worst, time.perf_counter() - start)
    assert time.perf_counter() - begin < 1.0
    return worst


def test_host_down_never_blocks_and_shutdown_is_bounded(registry: Registry) -> None:
    a = Analytics(KEY, f"http://127.0.0.1:{free_port()}", registry=registry, flush_interval=0.05,
                  max_retries=1)
    worst = _flood(a, 300)
    assert worst < 0.25  # no network on the calling thread (a scheduling hiccup on a busy machine is not)
    # The uploader fails batches in the background; they are counted, not raised.
    wait_for(lambda: dropped(registry)["send_failed"] >= 1, 15, what="a failed batch to be counted")
    _flood(a, 300)
    start = time.monotonic()
    a.shutdown()  # default budget: 5 s
    took = time.monotonic() - start
    assert took < 5.5
    counts = dropped(registry)
    # Every event is accounted for: none was delivered, each was dropped once, for one reason.
    assert counts["send_failed"] + counts["shutdown"] + counts["queue_full"] == 600
    assert counts["error"] == 0
    assert not a.enabled and a.capture("run_report") is False  # after shutdown: dropped, counted
    assert dropped(registry)["shutdown"] == counts["shutdown"] + 1


def test_black_holed_host_never_blocks_and_shutdown_is_bounded(registry: Registry) -> None:
    with BlackHole() as hole:
        a = Analytics(KEY, hole.url, registry=registry, flush_interval=0.05, request_timeout=30)
        worst = _flood(a, 500)
        assert worst < 0.25  # the upload hangs for 30 s: a call that waited for it would show
        wait_for(lambda: hole.connections >= 1, 5, what="an upload hanging in the black hole")
        start = time.monotonic()
        a.shutdown(timeout=2.0)
        took = time.monotonic() - start
    assert 1.5 < took < 2.5
    counts = dropped(registry)
    # The upload hanging in the hole (30 s timeout) is abandoned at the deadline: its batch and the queue are
    # counted as dropped at shutdown, and nothing twice.
    assert counts["shutdown"] == 500 and sum(counts.values()) == 500


def test_full_queue_drops_and_counts(registry: Registry) -> None:
    with BlackHole() as hole:
        a = Analytics(KEY, hole.url, registry=registry, queue_size=10, flush_interval=60)
        _flood(a, 1000)
        counts = dropped(registry)
        a.shutdown(timeout=0.5)
    # Two bounded queues of 10 (hand-off and posthog's), plus at most one batch taken by the uploader.
    assert 1000 - 20 - 100 <= counts["queue_full"] <= 1000 - 10


def test_exceptions_are_swallowed_logged_and_counted(analytics: Analytics, registry: Registry,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    class Exploding(dict[str, Any]):
        def keys(self) -> Any:
            raise RuntimeError("boom")

        def __iter__(self) -> Any:
            raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="telemetry.analytics"):
        assert analytics.capture("run_report", properties=Exploding(a=1)) is False
    assert dropped(registry)["error"] == 1
    analytics.alias(None)  # type: ignore[arg-type]  # a programming error still does not raise
    analytics.group_identify("project", None, name=object())  # type: ignore[arg-type]
    assert dropped(registry)["error"] == 2
    assert any("boom" in (r.exc_text or "") or r.exc_info for r in caplog.records)
    # Broken middleware user lookups do not break the page either.
    import asyncio

    app = Starlette(routes=[Route("/", lambda r: HTMLResponse("<p>hi</p>"))])

    def broken(scope: Any) -> User | None:
        raise RuntimeError("no user")

    app.add_middleware(PageViewMiddleware, analytics=analytics, user=broken)
    (response,) = asyncio.run(_get_all(app, [("GET", "/")]))
    assert response.status_code == 200


def test_shutdown_flushes_what_is_queued(capture: CaptureServer, registry: Registry) -> None:
    a = Analytics(KEY, capture.url, registry=registry, flush_interval=60)  # only shutdown sends
    for i in range(250):
        a.capture("run_report", distinct_id="1", properties={"i": i})
    start = time.monotonic()
    a.shutdown()
    assert time.monotonic() - start < 5
    assert sorted(e["properties"]["i"] for e in capture.events) == list(range(250))
    assert sum(dropped(registry).values()) == 0


@pytest.mark.parametrize("env, named", [
    ({"TUIST_POSTHOG_DENY_PROPERTIES": "email,,plan"}, "TUIST_POSTHOG_DENY_PROPERTIES"),
    ({"TUIST_POSTHOG_SHUTDOWN_TIMEOUT": "0"}, "TUIST_POSTHOG_SHUTDOWN_TIMEOUT"),
    ({"TUIST_POSTHOG_QUEUE_SIZE": "0"}, "TUIST_POSTHOG_QUEUE_SIZE"),
    ({"TUIST_POSTHOG_REQUEST_TIMEOUT": "soon"}, "TUIST_POSTHOG_REQUEST_TIMEOUT"),
])
def test_bad_analytics_settings_fail_at_startup_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


def test_settings_reach_the_client(capture: CaptureServer, registry: Registry) -> None:
    a = Analytics.from_settings(Settings.from_env({
        "TUIST_POSTHOG_API_KEY": KEY, "TUIST_POSTHOG_URL": capture.url, "TUIST_POSTHOG_SHUTDOWN_TIMEOUT": "1.5",
        "TUIST_POSTHOG_QUEUE_SIZE": "7", "TUIST_POSTHOG_REQUEST_TIMEOUT": "0.25",
        "TUIST_POSTHOG_SCRIPT_URL": f"https://{UNREACHED}/ph.js", "TUIST_POSTHOG_DENY_PROPERTIES": "a, b"}),
        registry=registry)
    try:
        assert a.shutdown_timeout == 1.5 and a._sender is not None
        assert a._sender.maxsize == 7 and a._sender.request_timeout == 0.25
        assert a.script_url == f"https://{UNREACHED}/ph.js" and a.deny_properties == {"a", "b"}
        assert snippet(a, "/").startswith(f'<script src="https://{UNREACHED}/ph.js">')
    finally:
        a.shutdown(timeout=1)


# -- the sender's retries -------------------------------------------------------------------------------------
def test_retries_server_errors_then_delivers(capture: CaptureServer, registry: Registry) -> None:
    capture.fail = [503, 429]
    a = Analytics(KEY, capture.url, registry=registry, flush_interval=0.05)
    try:
        for i in range(3):
            a.capture("run_report", distinct_id="1", properties={"i": i})
        assert a.flush(10)
    finally:
        a.shutdown(timeout=2)
    assert capture.failed == 2
    assert [e["properties"]["i"] for e in capture.events] == [0, 1, 2]
    assert sum(dropped(registry).values()) == 0


def test_client_errors_are_not_retried(capture: CaptureServer, registry: Registry) -> None:
    capture.fail = [400, 400]
    a = Analytics(KEY, capture.url, registry=registry, flush_interval=0.05)
    try:
        a.capture("run_report", distinct_id="1")
        assert a.flush(5)
    finally:
        a.shutdown(timeout=2)
    assert capture.failed == 1 and capture.fail == [400]  # one attempt, no retry
    assert dropped(registry)["send_failed"] == 1 and capture.events == []


def test_values_json_cannot_encode_are_sent_cleaned(analytics: Analytics, capture: CaptureServer) -> None:
    import datetime
    import decimal

    analytics.capture("run_report", distinct_id="1", properties={
        "tags": {"b"}, "price": decimal.Decimal("1.5"), "at": datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)})
    analytics.flush(5)
    (event,) = capture.events
    assert event["properties"]["tags"] == ["b"]
    assert event["properties"]["price"] == 1.5
    assert event["properties"]["at"].startswith("2026-01-02T00:00:00")


def test_process_exit_without_shutdown_still_delivers_briefly(capture: CaptureServer) -> None:
    import subprocess
    import sys

    code = ("from telemetry.analytics import Analytics\nfrom telemetry.registry import Registry\n"
            f"a = Analytics({KEY!r}, {capture.url!r}, registry=Registry())\n"
            "for i in range(5):\n    a.capture('run_report', distinct_id='1', properties={'i': i})\n")
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30, cwd=str(Path(__file__).parent.parent))
    assert time.monotonic() - start < 5
    assert [e["properties"]["i"] for e in capture.events] == [0, 1, 2, 3, 4]
    # With the host down the exit waits about the 1 s at-exit budget, not the 5 s shutdown budget.
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", code.replace(capture.url, f"http://127.0.0.1:{free_port()}")],
                   check=True, timeout=30, cwd=str(Path(__file__).parent.parent), capture_output=True)
    assert time.monotonic() - start < 4


# -- a slow host, a host that never answers ------------------------------------------------------------------
def test_an_upload_answered_after_its_timeout_is_delivered_once(capture: CaptureServer, registry: Registry) -> None:
    capture.delay = 1.5  # the request timeout (1 s) + 0.5 s: each batch is received, then answered late
    a = Analytics(KEY, capture.url, registry=registry, flush_interval=0.05, request_timeout=1.0)
    try:
        for i in range(150):
            a.capture("run_report", distinct_id="1", properties={"i": i})
        assert a.flush(20)
    finally:
        a.shutdown(timeout=5)
    uuids = [e["uuid"] for e in capture.events]
    # The timed-out attempt waits for the late answer instead of sending the batch again: once each, no drops.
    assert len(uuids) == len(set(uuids)) == 150, (len(uuids), len(set(uuids)))
    assert sorted(e["properties"]["i"] for e in capture.events) == list(range(150))
    assert sum(dropped(registry).values()) == 0


def test_shutdown_with_a_host_that_never_answers_logs_and_counts_every_loss(
        registry: Registry, caplog: pytest.LogCaptureFixture) -> None:
    with BlackHole() as hole:
        a = Analytics(KEY, hole.url, registry=registry, flush_interval=0.05, request_timeout=3.0)
        for i in range(2200):
            a.capture("run_report", distinct_id="1", properties={"i": i})
        wait_for(lambda: hole.connections >= 1, 5, what="an upload hanging in the black hole")
        with caplog.at_level(logging.INFO, logger="telemetry.analytics"):
            a.shutdown(timeout=1.0)
    lines = [r for r in caplog.records if r.name.startswith("telemetry.analytics")]
    assert len(lines) == 1, [r.getMessage() for r in lines]  # one line at shutdown, whatever the path
    (line,) = lines
    counts = dropped(registry)
    assert line.levelno == logging.WARNING
    assert line.analytics_dropped == 2200 and sum(counts.values()) == 2200  # type: ignore[attr-defined]
    assert line.analytics_dropped_reasons == {k: v for k, v in counts.items() if v}  # type: ignore[attr-defined]
    assert line.analytics_sent + line.analytics_dropped == line.analytics_recorded == 2200  # type: ignore[attr-defined]


def test_logs_and_analytics_share_one_request_context(analytics: Analytics, registry: Registry) -> None:
    import asyncio

    from telemetry import logs
    from telemetry.context import current_request
    from telemetry.instrumentation.asgi import instrument_asgi

    seen: list[tuple[str | None, dict[str, Any]]] = []

    async def page(request: Request) -> HTMLResponse:
        logs.bind(user_id=42)
        context = current_request()
        assert context is not None
        seen.append((context.route, logs.bound_fields()))
        return HTMLResponse("<p>hi</p>")

    app = Starlette(routes=[Route("/dashboard/{rest:path}", page)])
    app.add_middleware(PageViewMiddleware, analytics=analytics)
    wrapped = instrument_asgi(app, registry=registry)

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=wrapped)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{UNREACHED}") as client:
            return await client.get("/dashboard/tuist/app", headers={"x-request-id": "r-1"})

    assert asyncio.run(get()).status_code == 200
    # The analytics route and the log fields (the ASGI middleware's request id, the handler's bind) are one.
    ((route, fields),) = seen
    assert route == "/dashboard/tuist/app"
    assert fields["user_id"] == 42 and fields["method"] == "GET" and "request_id" in fields
