"""The reference service end to end: started exactly as ``make run`` starts it (``python -m service``) on free
ports, driven over HTTP, its /metrics scraped.

- ``busy``: with the replayer on, every documented family has data within 10 s of the process starting (the pool's
  disconnect counter too, every time), and
  inbound metrics carry route templates;
- ``quiet``: with ``--no-traffic``, exact counts for runs, cache tiers, multipart uploads, previews, token
  refresh errors, deletes, accounts gauges, bad input and request ids;
- separate processes for bad settings and SERVICE_FAILURE_RATE (with Sentry).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.settings import ServiceSettings
from telemetry.catalogue import REPO_DISCONNECTED, Kind, documented, documented_names, spec
from telemetry.testing import WaitTimeout, parse_exposition, sample_total, wait_for
from tests.conftest import free_port
from tests.service_process import ROOT, RecordingServer, ServiceProcess, issue_token

pytestmark = pytest.mark.slow

# Gauges whose honest value is 0 on an idle moment: present, but not required to be above 0.
MAY_BE_ZERO = {"tuist_repo_pool_checkout_queue_length", "tuist_http_queue_in_use_connections"}
TEMPLATES = {
    "/", "/api/docs", "/dashboard/{account}/{project}", "/health/live", "/health/ready", "/api/auth/refresh_token",
    "/api/projects", "/api/projects/{account}/{project}/runs", "/api/projects/{account}/{project}/cache",
    "/api/projects/{account}/{project}/cache/{hash}",
    "/api/projects/{account}/{project}/cache/{hash}/multipart/start",
    "/api/projects/{account}/{project}/cache/{hash}/multipart/part",
    "/api/projects/{account}/{project}/cache/{hash}/multipart/complete",
    "/api/projects/{account}/{project}/previews", "/api/projects/{account}/{project}/previews/{preview_id}",
    "/_store/{key}", "unmatched",
}


def missing_data(text: str) -> list[str]:
    """Documented sample names with no data: counters and histograms at 0, gauges absent (or at 0 unless
    their idle value is 0)."""
    samples = [(x.name, x.labels, x.value) for x in parse_exposition(text)]
    totals: dict[str, float] = {}
    present: set[str] = set()
    for name, _labels, sample in samples:
        present.add(name)
        totals[name] = totals.get(name, 0.0) + sample
    missing = []
    for s in documented():
        if s.kind is Kind.HISTOGRAM:
            ok = totals.get(f"{s.name}_count", 0) > 0 and totals.get(f"{s.name}_sum", 0) > 0
        elif s.kind is Kind.GAUGE:
            ok = s.name in present and (s.name in MAY_BE_ZERO or totals[s.name] > 0)
        else:
            ok = totals.get(s.name, 0) > 0
        if not ok:
            missing.extend(s.doc_names)
    return missing


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with ServiceProcess(tmp_path_factory.mktemp("busy")) as service:
        yield service


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with ServiceProcess(tmp_path_factory.mktemp("quiet"), traffic=False) as service:
        service.wait_ready()
        yield service


def test_every_documented_family_has_data_within_10_seconds(busy: ServiceProcess) -> None:
    assert len(documented_names()) == 53
    missing: list[str] = list(documented_names())

    def all_have_data() -> bool:
        nonlocal missing
        missing = missing_data(busy.scrape())
        return not missing

    with contextlib.suppress(WaitTimeout):  # 10 s from the start, not from now; not listening yet is "not yet"
        wait_for(all_have_data, max(10 - (time.monotonic() - busy.started_at), 0), interval=0.5,
                 ignore=(httpx.TransportError,))
    elapsed = time.monotonic() - busy.started_at
    assert not missing, f"no data after {elapsed:.1f} s for {missing}\n{busy.output()[-3000:]}"
    out = busy.stdout_path.read_text()
    assert f"service:  {busy.url}/" in out
    assert f"metrics:  {busy.metrics_url}" in out


def test_inbound_metrics_use_route_templates(busy: ServiceProcess) -> None:
    busy.wait_ready()
    for path in ("/no/such/page/1", "/no/such/page/2", "/api/projects/acme/ios-app/cache/zz"):
        httpx.get(busy.url + path)
    text = busy.scrape()
    routes = {x.labels["route"] for x in parse_exposition(text) if x.name == "http_requests_total"}
    assert routes <= TEMPLATES, routes - TEMPLATES
    assert {"/api/projects/{account}/{project}/runs", "/api/projects/{account}/{project}/cache/{hash}",
            "/_store/{key}", "unmatched"} <= routes
    assert sample_total(text, "http_requests_total", route="/api/projects/{account}/{project}/runs", status="201") > 0
    assert sample_total(text, "http_requests_total", route="unmatched", status="404") >= 2
    bounds = {x.labels["le"] for x in parse_exposition(text) if x.name == "http_request_duration_seconds_bucket"}
    assert len(bounds) == len(spec("http_request_duration_seconds").buckets) + 1
    assert {"0.005", "0.1", "+Inf"} <= bounds
    # Prometheus types the family from the catalogue.
    assert "# TYPE http_requests_total counter" in text
    assert "# TYPE http_request_duration_seconds histogram" in text


def test_exact_counts_for_each_kind_of_work(quiet: ServiceProcess) -> None:
    token = issue_token(quiet)
    api = httpx.Client(base_url=quiet.url, headers={"authorization": f"Bearer {token}",
                                                    "x-tuist-cli-version": "4.50.0"}, timeout=10)
    before = quiet.scrape()

    # a run
    assert api.post("/api/projects/acme/ios-app/runs", json={"name": "lint", "is_ci": True, "status": 1,
                                                            "duration_ms": 1234.5}).status_code == 201
    # a multipart upload in two parts, then a remote hit, a local hit and a miss
    digest = "ab" * 20
    base = f"/api/projects/acme/ios-app/cache/{digest}/multipart"
    upload_id = api.post(f"{base}/start").json()["upload_id"]
    parts = [b"x" * 3000, b"y" * 2000]
    for number, data in enumerate(parts, 1):
        url = api.post(f"{base}/part", json={"upload_id": upload_id, "part_number": number}).json()["url"]
        assert httpx.put(url, content=data).status_code == 200
    assert api.post(f"{base}/complete", json={"upload_id": upload_id, "parts": [1, 2]}).json() == {"size": 5000}
    first = api.get(f"/api/projects/acme/ios-app/cache/{digest}")
    second = api.get(f"/api/projects/acme/ios-app/cache/{digest}")
    assert first.content == second.content == b"x" * 3000 + b"y" * 2000
    missing = api.get("/api/projects/acme/ios-app/cache/" + "cd" * 20)
    assert missing.status_code == 404 and missing.json()["status"] == 404
    # a preview up and down
    preview = api.post("/api/projects/acme/ios-app/previews", content=b"z" * 777).json()
    found = api.get(f"/api/projects/acme/ios-app/previews/{preview['id']}").json()
    assert found["manifest"]["size"] == 777
    assert httpx.get(found["url"]).content == b"z" * 777
    # token refresh: unknown token, an access token as refresh token, a garbage CLI version
    assert api.post("/api/auth/refresh_token", json={"refresh_token": "nope"}).status_code == 401
    assert api.post("/api/auth/refresh_token", json={"refresh_token": token}).status_code == 401
    assert api.post("/api/auth/refresh_token", json={"refresh_token": "nope"},
                    headers={"x-tuist-cli-version": "evil\"version"}).status_code == 401
    refresh = issue_token(quiet, kind="refresh")
    renewed = api.post("/api/auth/refresh_token", json={"refresh_token": refresh})
    assert renewed.status_code == 200 and set(renewed.json()) == {"access_token", "refresh_token"}
    assert api.post("/api/auth/refresh_token", json={"refresh_token": refresh}).status_code == 401  # rotated
    # delete the project's artifacts: the next download is a miss
    assert api.delete("/api/projects/acme/ios-app/cache").json()["deleted"] == 3  # artifact, preview archive, manifest
    assert api.get(f"/api/projects/acme/ios-app/cache/{digest}").status_code == 404

    after = quiet.scrape()

    def delta(metric: str, /, **labels: str) -> float:
        return sample_total(after, metric, **labels) - sample_total(before, metric, **labels)

    assert delta("tuist_runs_total", name="lint", is_ci="true", status="1") == 1
    assert delta("tuist_runs_duration_milliseconds_sum", name="lint", is_ci="true", status="1") == 1234.5
    assert delta("tuist_cache_events_total", event_type="remote_hit") == 1
    assert delta("tuist_cache_events_total", event_type="local_hit") == 1
    assert delta("tuist_cache_events_total", event_type="miss") == 2
    assert delta("tuist_cache_uploads_total") == 1 and delta("tuist_cache_uploaded_bytes") == 5000
    assert delta("tuist_cache_downloads_total") == 2 and delta("tuist_cache_downloaded_bytes") == 10000
    assert delta("tuist_previews_uploads_total") == 1 and delta("tuist_previews_downloads_total") == 1
    key = f"acme/ios-app/cache/{digest}"
    assert delta("tuist_storage_check_object_existence_count", object_key=key) == 2  # remote hit, final miss
    assert delta("tuist_storage_get_object_size_count", object_key=key) == 1
    assert delta("tuist_storage_get_object_size_size_bytes_sum", object_key=key) == 5000
    assert delta("tuist_storage_generate_download_presigned_url_count", object_key=key) == 1
    assert delta("tuist_storage_multipart_start_upload_duration_count", object_key=key) == 1
    assert delta("tuist_storage_multipart_generate_upload_part_presigned_url_count", object_key=key,
                 upload_id=upload_id) == 2
    assert delta("tuist_storage_multipart_complete_upload_count", object_key=key, upload_id=upload_id) == 1
    preview_key = f"acme/ios-app/previews/{preview['id']}"
    assert delta("tuist_storage_get_object_as_string_count", object_key=preview_key + ".json") == 1
    assert delta("tuist_storage_multipart_complete_upload_count", object_key=preview_key + ".zip") == 1
    assert delta("tuist_storage_delete_all_objects_count", project_slug="acme/ios-app") == 1
    assert delta("tuist_authentication_token_refresh_error_total", cli_version="4.50.0",
                 reason="invalid_token") == 2
    assert delta("tuist_authentication_token_refresh_error_total", cli_version="4.50.0",
                 reason="invalid_token_type") == 1
    assert delta("tuist_authentication_token_refresh_error_total", cli_version="unknown",
                 reason="invalid_token") == 1
    # the store's presigned GET went out through the instrumented httpx client
    assert delta("tuist_http_request_count", method="GET", status="200") >= 1
    assert delta("tuist_http_request_count", method="PUT", status="200") == 2  # preview zip + manifest parts
    assert sample_total(after, "tuist_repo_pool_db_connection_connected", pool="default") >= 1


def test_accounts_gauges_follow_the_database(quiet: ServiceProcess) -> None:
    text = quiet.scrape()
    assert sample_total(text, "tuist_accounts_users_total") == 4
    assert sample_total(text, "tuist_accounts_organizations_total") == 2
    projects = sample_total(text, "tuist_projects_total")
    token = issue_token(quiet, user_id=2)
    created = httpx.post(f"{quiet.url}/api/projects", json={"account": "acme", "name": f"new-{free_port()}"},
                         headers={"authorization": f"Bearer {token}"})
    assert created.status_code == 201
    wait_for(lambda: sample_total(quiet.scrape(), "tuist_projects_total") == projects + 1, 10, interval=0.3,
             what="the projects gauge to count the new project")


def test_pool_recycling_counts_disconnects_without_concurrent_requests(quiet: ServiceProcess) -> None:
    """One request at a time never overflows the pool, so only recycling closes connections: a connection used
    before the recycle age is closed and replaced at its next checkout, and the disconnect counter moves."""
    before = sample_total(quiet.scrape(), REPO_DISCONNECTED)
    assert httpx.get(f"{quiet.url}/health/ready").status_code == 200
    time.sleep(ServiceSettings().db_pool_recycle + 0.5)

    def recycled() -> float:
        assert httpx.get(f"{quiet.url}/health/ready").status_code == 200
        return sample_total(quiet.scrape(), REPO_DISCONNECTED) - before

    assert wait_for(recycled, 5, interval=0.2, what="a recycled connection") >= 1


def test_bad_input_gets_4xx_json_counted_by_status(quiet: ServiceProcess) -> None:
    token = issue_token(quiet)
    auth = {"authorization": f"Bearer {token}"}
    runs = f"{quiet.url}/api/projects/acme/ios-app/runs"
    before = quiet.scrape()
    cases = [
        (httpx.post(runs, content=b"{not json", headers=auth), 400, "not valid JSON"),
        (httpx.post(runs, json=[1, 2], headers=auth), 400, "JSON object"),
        (httpx.post(runs, json={"name": "build"}, headers=auth), 422, "is_ci is required"),
        (httpx.post(runs, json={"name": "build", "is_ci": "yes", "status": 0, "duration_ms": 1}, headers=auth),
         422, "is_ci must be of type bool"),
        (httpx.post(runs, json={"name": "build", "is_ci": True, "status": 7, "duration_ms": 1}, headers=auth),
         422, "status must be 0"),
        (httpx.post(runs, json={"name": "build", "is_ci": True, "status": 0, "duration_ms": 1}), 401, "token"),
        (httpx.post(f"{quiet.url}/api/projects/globex/nope/runs", json={"name": "b", "is_ci": True, "status": 0,
                                                                        "duration_ms": 1}, headers=auth), 404,
         "no project"),
        (httpx.get(f"{quiet.url}/api/projects/acme/ios-app/cache/NOT-HEX", headers=auth), 400, "hash"),
        (httpx.get(f"{quiet.url}/definitely/not/here"), 404, "Not Found"),
        (httpx.put(f"{quiet.url}/_store/acme/ios-app/cache/x?expires=1&signature=bad", content=b"x"), 403,
         "expired"),
    ]
    for response, status, text in cases:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["status"] == status and text in body["error"], body
    route = "/api/projects/{account}/{project}/runs"
    expected = {("POST", route, "400"): 2, ("POST", route, "422"): 3, ("POST", route, "401"): 1,
                ("POST", route, "404"): 1, ("GET", "unmatched", "404"): 1, ("PUT", "/_store/{key}", "403"): 1}

    def deltas() -> dict[tuple[str, str, str], float]:
        after = quiet.scrape()
        return {k: sample_total(after, "http_requests_total", method=k[0], route=k[1], status=k[2])
                - sample_total(before, "http_requests_total", method=k[0], route=k[1], status=k[2]) for k in expected}
    # A request is counted just after its response went out.
    wait_for(lambda: deltas() == expected, 5, interval=0.1, what=f"the request counts {expected}")


def test_request_ids_and_log_lines(quiet: ServiceProcess) -> None:
    token = issue_token(quiet, user_id=3)
    given = httpx.get(f"{quiet.url}/api/projects", headers={"x-request-id": "req-abc.123",
                                                            "authorization": f"Bearer {token}"})
    assert given.headers["x-request-id"] == "req-abc.123"
    made = httpx.get(f"{quiet.url}/health/live", headers={"x-request-id": 'bad "id" with spaces'})
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    line = quiet.access_line("req-abc.123")
    assert line["method"] == "GET" and line["route"] == "/api/projects" and line["status"] == 200
    assert line["user_id"] == 3 and line["level"] == "info"
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    # no OTLP endpoint: tracing is off, so there are no spans and no ids (test_tracing covers them)
    assert "trace_id" not in line and "span_id" not in line
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(line["time"]))
    for raw in quiet.log_lines():  # every line is one JSON object
        json.loads(raw)


def test_failure_rate_makes_api_routes_fail_and_reports_to_sentry(tmp_path: Path) -> None:
    with RecordingServer() as sentry, ServiceProcess(
            tmp_path, traffic=False, env={"SERVICE_FAILURE_RATE": "1",
                                          "SENTRY_DSN": f"http://public@127.0.0.1:{sentry.port}/42"}) as service:
        service.wait_ready()
        responses = [httpx.get(f"{service.url}/api/projects") for _ in range(3)]
        assert [r.status_code for r in responses] == [500, 500, 500]
        assert responses[0].json() == {"error": "internal error", "status": 500}
        assert httpx.get(f"{service.url}/health/ready").status_code == 200  # only /api routes fail
        assert httpx.get(f"{service.url}/").status_code == 200
        text = service.scrape()
        assert sample_total(text, "http_requests_total", route="/api/projects", status="500") == 3
        wait_for(lambda: len(sentry.received("/api/42/envelope")) >= 3, 10, interval=0.2, what="three Sentry events")
        time.sleep(1.0)  # anything extra (a second event per error) would have arrived by now
        envelopes = sentry.received("/api/42/envelope")
        assert len(envelopes) == 3  # one event per error: error log lines are breadcrumbs, not events
        _path, headers, body = envelopes[0]
        if headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        items = [json.loads(line) for line in body.splitlines() if line.strip()]
        events = [i for i in items if "exception" in i]
        assert events, items
        assert events[0]["exception"]["values"][-1]["type"] == "InjectedFailure"
        errors = [json.loads(raw) for raw in service.log_lines() if '"level":"error"' in raw]
        assert any("InjectedFailure" in str(e.get("exception", "")) for e in errors)


@pytest.mark.parametrize(("env", "named"), [
    ({"SERVICE_FAILURE_RATE": "2"}, "SERVICE_FAILURE_RATE"),
    ({"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL"),
    ({"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"}, "DATABASE_URL"),  # nothing listens
    ({"SERVICE_PORT": "99999"}, "SERVICE_PORT"),
    ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
    ({"SERVICE_PUBLIC_URL": "127.0.0.1:8080"}, "SERVICE_PUBLIC_URL"),
    ({"DATABASE_URL": "postgresql://qa@127.0.0.1:x/test"}, "DATABASE_URL"),
    ({"TUIST_METRICS_CARDINALITY_LIMIT": "0"}, "TUIST_METRICS_CARDINALITY_LIMIT"),
])
def test_a_bad_setting_fails_at_startup_naming_it(tmp_path: Path, env: dict[str, str], named: str) -> None:
    result = subprocess.run([sys.executable, "-m", "service", "--no-traffic", "--data-dir", str(tmp_path)],
                            cwd=ROOT, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_metrics_port_in_use_fails_naming_the_setting(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "service", "--no-traffic", "--port", str(free_port()),
                                 "--metrics-port", str(port), "--data-dir", str(tmp_path)],
                                cwd=ROOT, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "TUIST_METRICS_PORT" in result.stderr


def test_the_docs_configuration_table_is_the_settings_table() -> None:
    from service.settings import ServiceSettings
    from telemetry.config import markdown_table

    assert markdown_table(ServiceSettings) in (ROOT / "docs" / "service.md").read_text()
