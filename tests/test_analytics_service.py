"""Analytics in the reference service (``python -m service``), end to end against the loopback capture endpoint:
server-side sign-in (identify, alias), custom events with groups and sections, page views; and with the PostHog
host down or black-holed, request latency like analytics off, no error, drops counted and a bounded shutdown."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from telemetry.testing import sample_total, wait_for
from tests.conftest import free_port
from tests.posthog_capture import BlackHole, CaptureServer
from tests.service_process import ServiceProcess, issue_token

KEY = "phc_service_test"
pytestmark = pytest.mark.slow


def by_event(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == name]


@pytest.fixture(scope="module")
def capture() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


@pytest.fixture(scope="module")
def service(capture: CaptureServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    env = {"TUIST_POSTHOG_API_KEY": KEY, "TUIST_POSTHOG_URL": capture.url}
    with ServiceProcess(tmp_path_factory.mktemp("analytics-service"), env=env, traffic=False) as svc:
        svc.wait_ready()
        yield svc


def test_sign_in_custom_events_and_page_views(service: ServiceProcess, capture: CaptureServer) -> None:
    api = httpx.Client(base_url=service.url, timeout=10, headers={"x-tuist-cli-version": "4.50.0"})
    renewed = api.post("/api/auth/refresh_token", json={"refresh_token": issue_token(service, kind="refresh")})
    assert renewed.status_code == 200
    api.headers["authorization"] = f"Bearer {renewed.json()['access_token']}"
    assert api.post("/api/projects", json={"account": "acme", "name": "watch-app"}).status_code == 201
    assert api.post("/api/projects/acme/watch-app/runs", json={"name": "build", "is_ci": False, "status": 0,
                                                              "duration_ms": 10.0}).status_code == 201
    assert api.post("/api/auth/refresh_token", json={"refresh_token": "nope"}).status_code == 401
    assert api.get("/").status_code == 200
    assert api.get("/health/ready").status_code == 200
    assert api.get("/api/projects").status_code == 200

    events = capture.wait_for(lambda ev: by_event(ev, "run_report") and by_event(ev, "$pageview")
                              and by_event(ev, "authentication_token_refresh_error"))
    assert {p.path for p in capture.posts} == {"/batch/"}
    assert all(p.body["api_key"] == KEY for p in capture.posts)
    (identify,) = by_event(events, "$identify")
    assert identify["distinct_id"] == "1" and identify["properties"]["$set"] == {"email": "ana@example.com"}
    (alias,) = by_event(events, "$create_alias")
    assert (alias["properties"]["distinct_id"], alias["properties"]["alias"]) == ("1", "ana")
    (authenticate,) = by_event(events, "user_authenticate")
    assert authenticate["distinct_id"] == "1" and authenticate["properties"]["method"] == "refresh_token"
    groups = {"organization": "acme", "project": "acme/watch-app"}
    (created,) = by_event(events, "project_create")
    assert created["properties"]["$groups"] == groups
    named = {(e["properties"]["$group_type"], e["properties"]["$group_key"])
             for e in by_event(events, "$groupidentify")}
    assert named == {("organization", "acme"), ("project", "acme/watch-app")}
    (run,) = by_event(events, "run_report")
    assert run["distinct_id"] == "1" and run["properties"]["$groups"] == groups
    (refresh_error,) = by_event(events, "authentication_token_refresh_error")
    assert refresh_error["properties"]["$process_person_profile"] is False
    # Page views: the HTML page only, not the health check or the JSON API.
    (pageview,) = by_event(events, "$pageview")
    assert pageview["properties"]["$current_url"] == service.url + "/"
    assert pageview["properties"]["page_section"] == "marketing"
    # page_section on every event; the email only in the identify's $set.
    assert all("page_section" in e["properties"] for e in events)
    assert [e["event"] for e in events if "ana@example.com" in str(e)] == ["$identify"]
    assert sample_total(service.scrape(), "tuist_analytics_events_dropped_total") == 0


# -- never in the way -----------------------------------------------------------------------------------------
def _latencies(clients: list[httpx.Client], paths: list[str], rounds: int) -> list[list[float]]:
    """Interleaved requests (the services take turns, so machine noise hits each alike); seconds per request."""
    out: list[list[float]] = [[] for _ in clients]
    for _ in range(rounds):
        for path in paths:
            for i, client in enumerate(clients):
                start = time.perf_counter()
                response = client.get(path)
                out[i].append(time.perf_counter() - start)
                assert response.status_code == 200, (path, response.status_code)
    return out


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def test_posthog_down_or_black_holed_changes_nothing_for_requests(tmp_path: Path) -> None:
    with BlackHole() as hole:
        down = f"http://127.0.0.1:{free_port()}"
        common = {"TUIST_POSTHOG_API_KEY": KEY, "TUIST_POSTHOG_REQUEST_TIMEOUT": "0.5"}
        for name in ("off", "down", "hole"):
            (tmp_path / name).mkdir()
        services = [
            ServiceProcess(tmp_path / "off", traffic=False),
            ServiceProcess(tmp_path / "down", env={**common, "TUIST_POSTHOG_URL": down}, traffic=False),
            ServiceProcess(tmp_path / "hole", env={**common, "TUIST_POSTHOG_URL": hole.url}, traffic=False),
        ]
        try:
            for s in services:
                s.wait_ready()
            clients = [httpx.Client(base_url=s.url, timeout=10) for s in services]
            _latencies(clients, ["/", "/api/docs"], 20)  # warm-up
            # Generous margins for a shared 2-core machine; bench/bench_analytics.py holds the 1.1x target.
            # Other processes' noise only adds latency, so a configuration gets three tries; waiting on the
            # network (refused at once, or never answered for 0.5 s per upload) would fail all three.
            attempts = []
            for _ in range(3):
                off, on_down, on_hole = _latencies(clients, ["/", "/api/docs", "/health/live"], 150)
                figures = {name: (p99(samples), statistics.median(samples))
                           for name, samples in (("off", off), ("down", on_down), ("black-holed", on_hole))}
                attempts.append(figures)
                p99_off, median_off = figures["off"]
                if all(p <= max(1.5 * p99_off, p99_off + 0.010) and m <= 1.5 * median_off + 0.002
                       for p, m in (figures["down"], figures["black-holed"])):
                    break
            else:
                raise AssertionError(f"latency with analytics on vs off, (p99, median) s per try: {attempts}")
            for client in clients:
                client.close()
            # The uploads failed in the background and were counted, not raised.
            def dropped() -> list[float]:
                counts = [sample_total(s.scrape(), "tuist_analytics_events_dropped_total", reason="send_failed")
                          for s in services[1:]]
                return counts if all(counts) else []

            wait_for(dropped, 30, interval=0.5, what="every failed upload to be counted as dropped")
            assert sample_total(services[0].scrape(), "tuist_analytics_events_dropped_total") == 0
            for s in services[1:]:
                assert sample_total(s.scrape(), "tuist_analytics_events_dropped_total", reason="error") == 0
            assert hole.connections >= 1
            # Shutdown is bounded: SIGTERM to exit within the 5 s analytics budget plus the service's own.
            for s in services:
                start = time.monotonic()
                assert s.stop() == 143, s.output()  # SIGTERM handled: the service closed everything
                took = time.monotonic() - start
                assert took < 8, (took, s.output())
                assert "Traceback" not in s.output()
        finally:
            for s in services:
                s.stop()


def test_sigterm_with_a_host_that_never_answers_logs_one_line_with_every_loss(tmp_path: Path) -> None:
    import json

    with BlackHole() as hole:
        env = {"TUIST_POSTHOG_API_KEY": KEY, "TUIST_POSTHOG_URL": hole.url}
        service = ServiceProcess(tmp_path, env=env, traffic=False)
        try:
            service.wait_ready()
            with httpx.Client(base_url=service.url, timeout=10) as client:
                for _ in range(300):  # 300 page views, queued behind an upload that hangs
                    assert client.get("/").status_code == 200
            counted = sample_total(service.scrape(), "tuist_analytics_events_dropped_total")
            assert service.stop() == 143, service.output()
        finally:
            service.stop()
    lines = [json.loads(line) for line in service.log_lines() if '"analytics: shutdown' in line]
    assert len(lines) == 1, service.output()
    (line,) = lines
    # Nothing reached PostHog: every page view is in the line, by reason, and sent + dropped == recorded.
    assert line["level"] == "warning" and line["analytics_sent"] == 0
    assert line["analytics_recorded"] >= 300
    assert line["analytics_dropped"] == line["analytics_recorded"] == sum(line["analytics_dropped_reasons"].values())
    assert counted <= line["analytics_dropped"]
