"""The browser side of analytics: Debian's headless ``chromium`` loads reference-service pages (``python -m
service``) whose ``<head>`` carries the snippet; posthog-js (npm, ``tests/browser``) is served by the loopback
capture endpoint, which is also the snippet's ``api_host``.

An anonymous visit: the server's ``$pageview`` and the browser's events share the bootstrapped random id, carry
``page_section`` and no person profile, and posthog-js leaves no cookie, localStorage or sessionStorage entry.
A signed-in visit: the browser sends the user's email (``$set``), the alias and both groups."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from telemetry.testing import wait_for
from tests.browser.chromium import Chromium
from tests.conftest import free_port, require, require_binary
from tests.posthog_capture import CaptureServer
from tests.service_process import ServiceProcess, issue_token

KEY = "phc_browser_test"
POSTHOG_JS = Path(__file__).parent / "browser" / "node_modules" / "posthog-js" / "dist" / "array.js"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def capture() -> Iterator[CaptureServer]:
    require(POSTHOG_JS.exists(), "posthog-js is not installed: run `npm ci` in tests/browser")
    with CaptureServer(static={"/static/array.js": POSTHOG_JS}) as server:
        yield server


@pytest.fixture(scope="module")
def service(capture: CaptureServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    env = {"TUIST_POSTHOG_API_KEY": KEY, "TUIST_POSTHOG_URL": capture.url}
    with ServiceProcess(tmp_path_factory.mktemp("analytics-browser"), env=env, traffic=False) as svc:
        svc.wait_ready()
        yield svc


@pytest.fixture
def browser() -> Iterator[Chromium]:
    chrome = Chromium(require_binary("chromium"))
    try:
        yield chrome
    finally:
        chrome.stop()


def web(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == name and e["properties"].get("$lib") == "web"]


def server_pageviews(events: list[dict[str, Any]], url: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "$pageview" and e["properties"].get("$lib") == "posthog-python"
            and e["properties"].get("$current_url") == url]


def test_anonymous_visit(service: ServiceProcess, capture: CaptureServer, browser: Chromium) -> None:
    url = service.url + "/"
    browser.navigate(url)
    assert browser.evaluate("document.scripts.length") >= 2
    # The server counted the page load, with the section and without a person profile...
    events = capture.wait_for(lambda ev: len(server_pageviews(ev, url)) == 1)
    (pageview,) = server_pageviews(events, url)
    assert pageview["properties"]["page_section"] == "marketing"
    assert pageview["properties"]["$process_person_profile"] is False
    # ...under the random id the page bootstrapped posthog-js with.
    anonymous_id = browser.evaluate("posthog.get_distinct_id()")
    assert anonymous_id == pageview["distinct_id"]
    assert browser.evaluate("posthog.get_property('page_section')") == "marketing"

    # What the browser sends carries the section, the same id and no person profile.
    browser.evaluate("posthog.capture('docs_link_click')")
    events = capture.wait_for(lambda ev: len(web(ev, "docs_link_click")) == 1)
    (click,) = web(events, "docs_link_click")
    assert click["properties"]["distinct_id"] == anonymous_id
    assert click["properties"]["page_section"] == "marketing"
    assert click["properties"]["$process_person_profile"] is False
    assert click["properties"]["$current_url"] == url
    assert "email" not in str(click) and "$set" not in click["properties"]

    # Nothing stored in the browser: no cookie at all (posthog-js's or the server's), no web storage entry.
    assert browser.cookies() == []
    assert browser.evaluate("Object.keys(localStorage).concat(Object.keys(sessionStorage))") == []

    # The API docs page is its own section; a new page load gets a new random id.
    docs = service.url + "/api/docs"
    browser.navigate(docs)
    events = capture.wait_for(lambda ev: len(server_pageviews(ev, docs)) == 1)
    (docs_view,) = server_pageviews(events, docs)
    assert docs_view["properties"]["page_section"] == "api-docs"
    assert docs_view["distinct_id"] == browser.evaluate("posthog.get_distinct_id()") != anonymous_id
    assert browser.cookies() == []
    assert browser.evaluate("Object.keys(localStorage).concat(Object.keys(sessionStorage))") == []


def test_signed_in_visit(service: ServiceProcess, capture: CaptureServer, browser: Chromium) -> None:
    token = issue_token(service, user_id=1)  # seeded user "ana", member of organization "acme"
    browser.call("Network.setCookie", name="tuist_session", value=token, url=service.url)
    url = service.url + "/dashboard/acme/ios-app"
    browser.navigate(url)
    assert "acme/ios-app" in browser.evaluate("document.querySelector('h1').textContent")
    groups = {"organization": "acme", "project": "acme/ios-app"}

    events = capture.wait_for(lambda ev: len(server_pageviews(ev, url)) == 1)
    (pageview,) = server_pageviews(events, url)
    assert pageview["distinct_id"] == "1"
    assert pageview["properties"]["$groups"] == groups
    assert pageview["properties"]["page_section"] == "dashboard"
    assert "$process_person_profile" not in pageview["properties"]

    # The browser identifies the user (email as a person property), aliases the account name, joins both
    # groups with their names; every event carries the section.
    events = capture.wait_for(lambda ev: len(web(ev, "$groupidentify")) >= 2 and web(ev, "$set")
                              and web(ev, "$create_alias"))
    (person,) = web(events, "$set")
    assert person["properties"]["distinct_id"] == "1"
    assert person["properties"]["$set"] == {"email": "ana@example.com"}
    (alias,) = web(events, "$create_alias")
    assert (alias["properties"]["distinct_id"], alias["properties"]["alias"]) == ("1", "ana")
    named = {(e["properties"]["$group_type"], e["properties"]["$group_key"]): e["properties"]["$group_set"]
             for e in web(events, "$groupidentify")}
    assert named == {("organization", "acme"): {"name": "acme"}, ("project", "acme/ios-app"): {"name": "acme/ios-app"}}
    signed_in = web(events, "$set") + web(events, "$create_alias") + web(events, "$groupidentify")
    assert {e["properties"]["page_section"] for e in signed_in} == {"dashboard"}
    assert all(e["properties"]["$is_identified"] is True for e in signed_in)
    assert browser.evaluate("posthog.get_distinct_id()") == "1"
    assert browser.evaluate("posthog.getGroups()") == groups
    # Identified users keep posthog-js's default persistence (documented); only the session cookie is ours.
    assert {c["name"] for c in browser.cookies()} == {"tuist_session", f"ph_{KEY}_posthog"}


def test_browser_page_views_when_turned_on(capture: CaptureServer, browser: Chromium) -> None:
    """``snippet(capture_pageview=True)`` (pages that navigate without a server page load): posthog-js's own
    ``$pageview`` already carries ``page_section`` and, anonymous, still stores nothing."""
    import threading

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    from telemetry.analytics import Analytics, snippet
    from telemetry.registry import Registry

    analytics = Analytics(KEY, capture.url, registry=Registry())

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(f"<html><head>{snippet(analytics, request.url.path, capture_pageview=True)}</head>"
                            "<body></body></html>")

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/{path:path}", page)]), host="127.0.0.1",
                                           port=port, log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 10, what="uvicorn to start")
        url = f"http://127.0.0.1:{port}/api/docs/runs"
        browser.navigate(url)
        events = capture.wait_for(lambda ev: any(e["properties"].get("$current_url") == url
                                                 for e in web(ev, "$pageview")))
        (pageview,) = [e for e in web(events, "$pageview") if e["properties"]["$current_url"] == url]
        assert pageview["properties"]["page_section"] == "api-docs"
        assert pageview["properties"]["$process_person_profile"] is False
        assert browser.cookies() == []
        assert browser.evaluate("Object.keys(localStorage).concat(Object.keys(sessionStorage))") == []
    finally:
        server.should_exit = True
        thread.join(10)
        analytics.shutdown(timeout=1)
