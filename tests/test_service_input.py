"""Bad input to the reference service (``python -m service`` on free ports): every malformed request gets a 4xx
with a JSON error, never a 500 and never a traceback in the log.

- the requests that answered 500 before: a lone surrogate or 100,000 nested ``[`` as the refresh token body,
  a non-ASCII presigned URL signature (GET and PUT), an empty or lone-surrogate upload id;
- body limits: over 1 MiB is 413, deeper than 16 levels is 400;
- a property test (hypothesis) sending arbitrary methods, paths, query strings and bodies to every route.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.app import ROUTES
from service.inputs import MAX_JSON_BYTES, MAX_JSON_DEPTH
from telemetry.testing import sample_total
from tests.service_process import ServiceProcess, issue_token

pytestmark = pytest.mark.slow

CACHE = "/api/projects/acme/ios-app/cache/" + "ab" * 16
FAR_FUTURE = "9999999999"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with ServiceProcess(tmp_path_factory.mktemp("input"), traffic=False) as running:
        running.wait_ready()
        yield running


@pytest.fixture(scope="module")
def api(service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=10,
                      headers={"authorization": f"Bearer {issue_token(service)}"}) as client:
        yield client


def assert_json_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == status and isinstance(body["error"], str) and body["error"]


def assert_no_traceback(service: ServiceProcess) -> None:
    lines = [line for line in service.log_lines() if "Traceback" in line or "unhandled error" in line]
    assert not lines, lines[:3]


def test_a_lone_surrogate_refresh_token_is_400(service: ServiceProcess, api: httpx.Client) -> None:
    response = api.post("/api/auth/refresh_token", content=b'{"refresh_token": "\\ud800"}',
                        headers={"content-type": "application/json"})
    assert_json_error(response, 400)
    assert "refresh_token" in response.json()["error"]
    assert_no_traceback(service)


def test_deeply_nested_json_is_400(service: ServiceProcess, api: httpx.Client) -> None:
    assert_json_error(api.post("/api/auth/refresh_token", content=b"[" * 100_000), 400)
    too_deep = b'{"refresh_token": ' + b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH + b"}"
    assert_json_error(api.post("/api/auth/refresh_token", content=too_deep), 400)
    deep_enough = b'{"refresh_token": ' + b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1) + b"}"
    assert_json_error(api.post("/api/auth/refresh_token", content=deep_enough), 422)  # parsed: not a string
    assert_no_traceback(service)


def test_a_body_over_the_limit_is_413(service: ServiceProcess, api: httpx.Client) -> None:
    big = json.dumps({"refresh_token": "x" * MAX_JSON_BYTES}).encode()
    assert_json_error(api.post("/api/auth/refresh_token", content=big), 413)
    assert_no_traceback(service)


@pytest.mark.parametrize("signature", ["%C3%A9", "%FF"])
@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_a_non_ascii_signature_is_403(service: ServiceProcess, method: str, signature: str) -> None:
    url = (f"{service.url}/_store/acme/ios-app/cache/{'ab' * 16}?upload_id={'0' * 32}&part_number=1"
           f"&expires={FAR_FUTURE}&signature={signature}")
    assert_json_error(httpx.request(method, url, content=b"x" if method == "PUT" else None, timeout=10), 403)
    assert_no_traceback(service)


@pytest.mark.parametrize("upload_id", ["", "\ud800"])
def test_a_bad_upload_id_is_400_and_records_nothing(service: ServiceProcess, api: httpx.Client,
                                                    upload_id: str) -> None:
    body = json.dumps({"upload_id": upload_id, "part_number": 1}).encode()  # \ud800 as its JSON escape
    before = sample_total(service.scrape(), "tuist_storage_multipart_generate_upload_part_presigned_url_count")
    assert_json_error(api.post(f"{CACHE}/multipart/part", content=body), 400)
    assert_json_error(api.post(f"{CACHE}/multipart/complete", content=json.dumps(
        {"upload_id": upload_id, "parts": [1]}).encode()), 400)
    after = sample_total(service.scrape(), "tuist_storage_multipart_generate_upload_part_presigned_url_count")
    assert after == before
    assert_no_traceback(service)


# -- the property test ----------------------------------------------------------------------------------------
# Text that has broken parsers, encoders or databases before, mixed into arbitrary text.
NASTY = ["", "\ud800", "\udfff", "\x00", "é", "\uffff", "%", "%FF", "..", "../..", "a" * 300, "0" * 32, "-1",
         "99999999999999999999", "1e999", "NaN", "[", "{", "\\"]
nasty_text = st.one_of(st.sampled_from(NASTY), st.text(max_size=40),
                       st.text(st.characters(codec="utf-8"), max_size=10).map(lambda s: s + "\ud800"))
FIELDS = ["refresh_token", "account", "name", "is_ci", "status", "duration_ms", "upload_id", "part_number",
          "parts", "display_name"]
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), nasty_text),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(nasty_text, inner, max_size=4)),
    max_leaves=12)
json_objects = st.dictionaries(st.one_of(st.sampled_from(FIELDS), nasty_text), json_values, max_size=6)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    json_objects.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 3000).map(lambda n: b"[" * n),
)


def segment(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@st.composite
def paths(draw: st.DrawFn) -> str:
    """A route's path with each ``{param}`` replaced by arbitrary (percent-encoded) text, or a real value."""
    template = draw(st.sampled_from([route.path for route in ROUTES]))
    real = {"account": "acme", "project": "ios-app", "hash": "ab" * 16, "preview_id": "0" * 32,
            "key:path": f"acme/ios-app/cache/{'ab' * 16}"}
    for name, good in real.items():
        if "{" + name + "}" in template:
            raw = draw(st.one_of(st.just(good), nasty_text))
            template = template.replace("{" + name + "}", segment(raw) if name != "key:path" else
                                        "/".join(segment(part) for part in raw.split("/")))
    return template


queries = st.dictionaries(st.one_of(st.sampled_from(["expires", "signature", "upload_id", "part_number",
                                                     "display_name"]), nasty_text),
                          st.one_of(st.just(FAR_FUTURE), nasty_text), max_size=5)


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]), path=paths(), query=queries, body=bodies,
       signed_in=st.booleans())
def test_no_request_gets_a_5xx(service: ServiceProcess, api: httpx.Client, method: str, path: str,
                               query: dict[str, str], body: bytes, signed_in: bool) -> None:
    qs = "&".join(f"{segment(k)}={segment(v)}" for k, v in query.items())
    url = path + ("?" + qs if qs else "")
    headers = {"content-type": "application/json"}
    if not signed_in:
        headers["authorization"] = ""
    response = api.request(method, url, content=body if method in ("POST", "PUT") else None, headers=headers)
    assert response.status_code < 500, (method, url, body[:200], response.text[:500])
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith("application/json"):
        assert response.json()["status"] == response.status_code


def test_the_property_test_left_no_traceback(service: ServiceProcess) -> None:
    assert_no_traceback(service)
