"""The typed recording API per domain: what each call records, and that bad input raises and records nothing."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import pytest

from telemetry.catalogue import STORAGE_OPERATIONS, spec
from telemetry.recorders import AccountCounts, Recorders
from telemetry.registry import Registry
from telemetry.testing import wait_for


@pytest.fixture
def rec(registry: Registry) -> Recorders:
    return Recorders(registry, gauge_refresh_seconds=0.05)


def values(registry: Registry, name: str) -> dict[tuple[str, ...], float]:
    return {c.labels: c.value for c in registry.counter(name).series()}


def hist(registry: Registry, name: str) -> dict[tuple[str, ...], tuple[list[int], float, int]]:
    return {c.labels: c.snapshot() for c in registry.histogram(name).series()}


def test_runs_record_counts_and_times(rec: Recorders, registry: Registry) -> None:
    rec.runs.record("build", is_ci=True, status=0, duration_ms=812.0)
    rec.runs.record("build", is_ci=True, status=0, duration_ms=100)
    rec.runs.record("test", is_ci=False, status=1, duration_ms=5_000)
    assert values(registry, "tuist_runs_total") == {("build", "true", "0"): 2, ("test", "false", "1"): 1}
    h = hist(registry, "tuist_runs_duration_milliseconds")
    counts, total, count = h[("build", "true", "0")]
    assert (total, count) == (912.0, 2)
    assert counts[:3] == [1, 0, 1]  # 100 in (.., 100], 812 in (500, 1000]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"is_ci": 1, "status": 0, "duration_ms": 1.0}, "tuist_runs_total: is_ci must be a bool, got 1"),
    ({"is_ci": True, "status": 2, "duration_ms": 1.0}, r"tuist_runs_total: status must be 0 \(success\) or 1"),
    ({"is_ci": True, "status": True, "duration_ms": 1.0}, "status must be 0"),
    ({"is_ci": True, "status": 0, "duration_ms": -1.0}, "tuist_runs_duration_milliseconds: duration_ms must be"),
    ({"is_ci": True, "status": 0, "duration_ms": math.nan}, "duration_ms must be finite"),
    ({"is_ci": True, "status": 0, "duration_ms": math.inf}, "duration_ms must be finite"),
])
def test_runs_bad_input_raises_and_records_nothing(rec: Recorders, registry: Registry, kwargs: dict[str, object],
                                                   message: str) -> None:
    rec.runs.record("build", is_ci=True, status=1, duration_ms=3.0)  # warm the bound-series cache
    before = (values(registry, "tuist_runs_total"), hist(registry, "tuist_runs_duration_milliseconds"))
    with pytest.raises(ValueError, match=message):
        rec.runs.record("build", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        rec.runs.record("fresh-command", **kwargs)  # type: ignore[arg-type]
    assert (values(registry, "tuist_runs_total"), hist(registry, "tuist_runs_duration_milliseconds")) == before


def test_cache_events_uploads_downloads(rec: Recorders, registry: Registry) -> None:
    rec.cache.event("local_hit")
    rec.cache.event("local_hit")
    rec.cache.event("miss")
    rec.cache.uploaded(1_000)
    rec.cache.uploaded(24)
    rec.cache.downloaded(0)
    assert values(registry, "tuist_cache_events_total") == {("local_hit",): 2, ("miss",): 1, ("remote_hit",): 0}
    assert values(registry, "tuist_cache_uploads_total") == {(): 2}
    assert values(registry, "tuist_cache_uploaded_bytes") == {(): 1_024}
    assert values(registry, "tuist_cache_downloads_total") == {(): 1}
    assert values(registry, "tuist_cache_downloaded_bytes") == {(): 0}


@pytest.mark.parametrize("bad", [-1, 1.5, math.nan, True, "10"])
def test_cache_bad_byte_counts_raise_and_record_nothing(rec: Recorders, registry: Registry, bad: object) -> None:
    rec.cache.uploaded(10)
    with pytest.raises(ValueError, match=r"tuist_cache_uploaded_bytes: byte counts must be whole numbers >= 0"):
        rec.cache.uploaded(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"tuist_cache_downloaded_bytes: byte counts"):
        rec.cache.downloaded(bad)  # type: ignore[arg-type]
    assert values(registry, "tuist_cache_uploads_total") == {(): 1}
    assert values(registry, "tuist_cache_uploaded_bytes") == {(): 10}
    assert values(registry, "tuist_cache_downloads_total") == {(): 0}


def test_cache_unknown_event_type(rec: Recorders, registry: Registry) -> None:
    with pytest.raises(ValueError, match=r"tuist_cache_events_total: event_type='hit' is not one of "
                                         r"\['local_hit', 'miss', 'remote_hit'\]"):
        rec.cache.event("hit")
    assert sum(values(registry, "tuist_cache_events_total").values()) == 0


def test_previews_and_auth(rec: Recorders, registry: Registry) -> None:
    rec.previews.uploaded()
    rec.previews.downloaded()
    rec.previews.downloaded()
    rec.auth.token_refresh_error(cli_version="4.40.0", reason="invalid_token")
    assert values(registry, "tuist_previews_uploads_total") == {(): 1}
    assert values(registry, "tuist_previews_downloads_total") == {(): 2}
    assert values(registry, "tuist_authentication_token_refresh_error_total") == {("4.40.0", "invalid_token"): 1}
    with pytest.raises(ValueError, match=r"tuist_authentication_token_refresh_error_total: label "
                                         r"reason='expired' is not one of \['invalid_token', 'invalid_token_type'\]"):
        rec.auth.token_refresh_error(cli_version="4.40.0", reason="expired")


def storage_names(op: str) -> tuple[str, str, str | None]:
    """The count, duration and (for get_object_size) size family of ``op``, from the catalogue."""
    count = next(s.name for s in _storage() if s.name.startswith(f"tuist_storage_{op}_") and s.kind.value == "counter")
    duration = next(s.name for s in _storage() if s.name.startswith(f"tuist_storage_{op}_") and s.unit == "ms")
    size = next((s.name for s in _storage() if s.name.startswith(f"tuist_storage_{op}_") and s.unit == "By"), None)
    return count, duration, size


def _storage() -> list:  # type: ignore[type-arg]
    from telemetry.catalogue import CATALOGUE

    return [s for s in CATALOGUE if s.domain == "storage"]


@pytest.mark.parametrize("op", STORAGE_OPERATIONS)
def test_storage_operation_times_and_counts_each_documented_operation(rec: Recorders, registry: Registry,
                                                                      op: str) -> None:
    count, duration, size = storage_names(op)
    labels = {n: f"v-{n}" for n in rec.storage.labels_of(op)}
    assert tuple(labels) == spec(count).labels == spec(duration).labels
    with rec.storage.operation(op, **labels) as handle:
        time.sleep(0.012)
        handle.size_bytes = 5_000
    key = tuple(labels.values())
    assert values(registry, count) == {key: 1}
    _, total, n = hist(registry, duration)[key]
    assert n == 1 and 12 <= total < 1_000, "the duration is in milliseconds"
    if size is not None:
        assert hist(registry, size)[key][1:] == (5_000, 1)
    else:
        assert op != "get_object_size"


def test_storage_records_even_when_the_operation_raises(rec: Recorders, registry: Registry) -> None:
    with pytest.raises(OSError), rec.storage.operation("check_object_existence", object_key="k"):
        raise OSError("s3 down")
    assert values(registry, "tuist_storage_check_object_existence_count") == {("k",): 1}
    assert hist(registry, "tuist_storage_check_object_existence_duration_milliseconds")[("k",)][2] == 1


def test_storage_bad_calls(rec: Recorders) -> None:
    with pytest.raises(ValueError, match="unknown storage operation 'get_object'; the documented ones are"):
        rec.storage.operation("get_object", object_key="k")
    with pytest.raises(ValueError, match=r"tuist_storage_delete_all_objects_count: labels are \['project_slug'\]"):
        rec.storage.operation("delete_all_objects", object_key="k")
    with pytest.raises(ValueError, match="label object_key must not be empty"):
        rec.storage.operation("get_object_as_string", object_key="")


def test_storage_timed_decorator_sync_and_async(rec: Recorders, registry: Registry) -> None:
    @rec.storage.timed("get_object_size")
    def get_size(bucket: str, object_key: str) -> int:
        return 4_096

    @rec.storage.timed("multipart_generate_upload_part_presigned_url")
    async def presign(object_key: str, upload_id: str, part_number: int = 1) -> str:
        await asyncio.sleep(0.001)
        return f"http://127.0.0.1:9/{object_key}/{part_number}"

    assert get_size("b", object_key="a.zip") == 4_096
    assert asyncio.run(presign("a.zip", "u1", part_number=3)).endswith("/3")
    assert asyncio.run(presign("a.zip", "u1")).endswith("/1")
    assert values(registry, "tuist_storage_get_object_size_count") == {("a.zip",): 1}
    assert hist(registry, "tuist_storage_get_object_size_size_bytes")[("a.zip",)][1:] == (4_096, 1)
    assert values(registry, "tuist_storage_multipart_generate_upload_part_presigned_url_count") == {
        ("a.zip", "3", "u1"): 1, ("a.zip", "1", "u1"): 1}

    with pytest.raises(TypeError, match=r"has no parameters \['object_key'\]"):
        @rec.storage.timed("check_object_existence")
        def wrong(key: str) -> bool:
            return True

    @rec.storage.timed("get_object_size")
    def not_a_size(object_key: str) -> str:
        return "big"

    with pytest.raises(TypeError, match="must return the size as an int, got str"):
        not_a_size("k")


def test_accounts_gauges_come_from_a_cached_callback(rec: Recorders, registry: Registry) -> None:
    calls: list[float] = []
    gate = threading.Event()

    def fetch() -> AccountCounts:
        calls.append(time.monotonic())
        gate.wait(5)
        return AccountCounts(projects=12, organizations=4, users=57 + len(calls))

    rec.accounts.register(fetch, refresh_seconds=1.0)
    registry.observe_gauges()
    # Until the first fetch finishes there is no sample rather than a false zero, and scrapes do not wait.
    assert registry.gauge("tuist_projects_total").series() == []
    gate.set()
    def fetched() -> bool:
        registry.observe_gauges()
        return bool(registry.gauge("tuist_projects_total").series())

    wait_for(fetched, 5, interval=0.01, what="the first fetch")
    assert registry.gauge("tuist_projects_total").labels().value == 12
    assert registry.gauge("tuist_accounts_organizations_total").labels().value == 4
    assert registry.gauge("tuist_accounts_users_total").labels().value == 58
    for _ in range(5):
        registry.observe_gauges()
    assert len(calls) == 1, "the cached value is reused within refresh_seconds"
    time.sleep(1.05)
    registry.observe_gauges()  # stale: serves the old value, refreshes in the background
    def refreshed() -> bool:
        registry.observe_gauges()
        return registry.gauge("tuist_accounts_users_total").labels().value == 59

    wait_for(refreshed, 5, interval=0.01, what="the background refresh")
    assert len(calls) == 2
    assert registry.gauge("tuist_accounts_users_total").labels().value == 59
    rec.accounts.unregister()
    time.sleep(1.05)
    registry.observe_gauges()
    time.sleep(0.05)
    assert len(calls) == 2


def test_accounts_failing_callback_keeps_previous_values(rec: Recorders, registry: Registry,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    results: list[object] = [AccountCounts(1, 2, 3), RuntimeError("db down"), "not counts"]

    def fetch() -> AccountCounts:
        item = results.pop(0) if len(results) > 1 else results[0]
        if isinstance(item, Exception):
            raise item
        return item  # type: ignore[return-value]

    rec.accounts.register(fetch, refresh_seconds=0.01)
    for _ in range(300):
        registry.observe_gauges()
        time.sleep(0.01)
        if len(results) == 1 and "must return AccountCounts" in caplog.text:
            break
    assert "the account counts callback failed" in caplog.text
    assert "must return AccountCounts" in caplog.text
    assert registry.gauge("tuist_projects_total").labels().value == 1
    rec.accounts.unregister()


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf, True, "12"])
def test_storage_bad_size_raises_and_records_nothing(rec: Recorders, registry: Registry, bad: object) -> None:
    with rec.storage.operation("get_object_size", object_key="k") as handle:
        handle.size_bytes = 10
    before = (values(registry, "tuist_storage_get_object_size_count"),
              hist(registry, "tuist_storage_get_object_size_duration_miliseconds"),
              hist(registry, "tuist_storage_get_object_size_size_bytes"))
    with pytest.raises(ValueError, match="tuist_storage_get_object_size_size_bytes: size_bytes must be a number "
                                         "of bytes >= 0"), rec.storage.operation("get_object_size",
                                                                                  object_key="k") as handle:
        handle.size_bytes = bad  # type: ignore[assignment]
    after = (values(registry, "tuist_storage_get_object_size_count"),
             hist(registry, "tuist_storage_get_object_size_duration_miliseconds"),
             hist(registry, "tuist_storage_get_object_size_size_bytes"))
    assert after == before
