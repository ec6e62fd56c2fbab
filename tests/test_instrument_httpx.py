"""httpx instrumentation against a real threaded HTTP(S) server on loopback: magnitudes, not just presence."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from telemetry.catalogue import HTTP_NS
from telemetry.exposition.reader import PrometheusReader
from telemetry.instrumentation import _http_exchange
from telemetry.instrumentation.httpx import instrument_httpx, instrumented_clients, uninstrument_httpx
from telemetry.registry import Registry
from tests.http_server import LoopbackServer, refused_port

MS = 1_000_000  # nanoseconds
HOST = "127.0.0.1"


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as s:
        yield s


@pytest.fixture(autouse=True)
def _uninstrument_all() -> Iterator[None]:
    yield
    uninstrument_httpx()


def hist(reg: Registry, name: str, *labels: str) -> tuple[list[int], float, int]:
    """(bucket counts, sum, count) of one series; zeros when the series does not exist."""
    for child in reg.histogram(name).series():
        if child.labels == labels:
            counts, total, count = child.snapshot()
            return counts, total, count
    return [0] * (len(HTTP_NS) + 1), 0, 0


def count(reg: Registry, name: str, *labels: str) -> float:
    for child in reg.counter(name).series():
        if child.labels == labels:
            return child.value
    return 0


def bucket_of(value_ns: float) -> int:
    """Index of the bucket a value falls in (bucket i counts values in (b[i-1], b[i]])."""
    return next((i for i, b in enumerate(HTTP_NS) if value_ns <= b), len(HTTP_NS))


def test_delay_before_headers_lands_in_receive_not_send(server: LoopbackServer, registry: Registry) -> None:
    with httpx.Client() as client:
        instrument_httpx(client, registry=registry)
        response = client.get(server.url + "/x?before=0.2")
    assert response.status_code == 200
    _, receive, n = hist(registry, "tuist_http_receive_duration_nanoseconds", HOST)
    assert n == 1 and 200 * MS <= receive < 400 * MS
    _, send, n = hist(registry, "tuist_http_send_duration_nanoseconds", HOST)
    assert n == 1 and send < 50 * MS
    _, total, n = hist(registry, "tuist_http_request_duration_nanosecond", "GET", HOST, "200")
    assert n == 1 and receive <= total < receive + 100 * MS
    assert count(registry, "tuist_http_request_count", "GET", HOST, "200") == 1
    assert count(registry, "tuist_http_send_count", HOST) == 1
    assert count(registry, "tuist_http_receive_count", HOST) == 1


def test_body_download_time_is_in_the_request_and_receive_durations(server: LoopbackServer,
                                                                     registry: Registry) -> None:
    # Three body chunks 150 ms apart: headers arrive at once, the body takes about 300 ms.
    with httpx.Client() as client:
        instrument_httpx(client, registry=registry)
        response = client.get(server.url + "/x?chunks=3&between=0.15&size=300")
    assert len(response.content) == 300
    _, total, _ = hist(registry, "tuist_http_request_duration_nanosecond", "GET", HOST, "200")
    _, receive, _ = hist(registry, "tuist_http_receive_duration_nanoseconds", HOST)
    # receive starts with the header read, a moment after the server began its first 150 ms pause
    assert 280 * MS <= receive <= total and 300 * MS <= total < 500 * MS


def test_streamed_response_is_measured_until_it_is_closed(server: LoopbackServer, registry: Registry) -> None:
    with httpx.Client() as client:
        instrument_httpx(client, registry=registry)
        with client.stream("GET", server.url + "/x?size=10") as response:
            assert hist(registry, "tuist_http_request_duration_nanosecond", "GET", HOST, "200")[2] == 0
            time.sleep(0.2)
            response.read()
    _, total, n = hist(registry, "tuist_http_request_duration_nanosecond", "GET", HOST, "200")
    assert n == 1 and total >= 200 * MS


def test_pool_of_one_queues_three_concurrent_requests(server: LoopbackServer, registry: Registry) -> None:
    with httpx.Client(limits=httpx.Limits(max_connections=1)) as client:
        instrument_httpx(client, registry=registry)
        barrier = threading.Barrier(3)

        def get() -> None:
            barrier.wait()
            client.get(server.url + "/x?before=0.2")

        threads = [threading.Thread(target=get) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    counts, total, n = hist(registry, "tuist_http_queue_duration_nanoseconds", HOST)
    assert n == 3
    # about 0, 200 and 400 ms: one each at most 100 ms, in (100, 250] ms and in (250, 500] ms
    assert bucket_of(100 * MS) + 1 == bucket_of(200 * MS) == bucket_of(250 * MS)
    assert bucket_of(250 * MS) + 1 == bucket_of(400 * MS) == bucket_of(500 * MS)
    assert sum(counts[:bucket_of(100 * MS) + 1]) == 1
    assert counts[bucket_of(200 * MS)] == 1
    assert counts[bucket_of(400 * MS)] == 1
    assert 580 * MS <= total < 800 * MS
    assert count(registry, "tuist_http_connection_count", HOST) == 1
    assert server.accepted == 1


def test_reused_connection_reports_its_idle_time_and_no_connection(server: LoopbackServer,
                                                                   registry: Registry) -> None:
    with httpx.Client() as client:
        instrument_httpx(client, registry=registry)
        client.get(server.url + "/a")
        _, first_idle, n = hist(registry, "tuist_http_queue_idle_time_nanoseconds", HOST)
        assert n == 1 and first_idle == 0  # a new connection
        _, connect_before, _ = hist(registry, "tuist_http_connection_duration_nanoseconds", HOST)
        time.sleep(0.3)
        client.get(server.url + "/b")
    _, idle, n = hist(registry, "tuist_http_queue_idle_time_nanoseconds", HOST)
    assert n == 2 and 300 * MS <= idle < 450 * MS
    assert count(registry, "tuist_http_connection_count", HOST) == 1
    assert hist(registry, "tuist_http_connection_duration_nanoseconds", HOST)[1:] == (connect_before, 1)
    assert count(registry, "tuist_http_queue_count", HOST) == 2
    assert server.accepted == 1


def test_refused_connection_is_counted_with_its_error_kind(registry: Registry) -> None:
    port = refused_port()
    with httpx.Client() as client:
        instrument_httpx(client, registry=registry)
        with pytest.raises(httpx.ConnectError):
            client.get(f"http://{HOST}:{port}/")
    assert count(registry, "tuist_http_request_count", "GET", HOST, "connect_error") == 1
    _, total, n = hist(registry, "tuist_http_request_duration_nanosecond", "GET", HOST, "connect_error")
    assert n == 1 and 0 < total < 100 * MS
    assert count(registry, "tuist_http_connection_count", HOST) == 0
    assert count(registry, "tuist_http_send_count", HOST) == 0


def test_timeouts_are_counted_with_their_error_kind(server: LoopbackServer, registry: Registry) -> None:
    with httpx.Client(timeout=httpx.Timeout(5, read=0.1)) as client:
        instrument_httpx(client, registry=registry)
        with pytest.raises(httpx.ReadTimeout):
            client.get(server.url + "/slow-headers?before=0.5")
        with pytest.raises(httpx.ReadTimeout):  # headers at once, then the body stalls
            client.get(server.url + "/slow-body?chunks=2&between=0.5&size=4")
    assert count(registry, "tuist_http_request_count", "GET", HOST, "read_timeout") == 2
    _, total, n = hist(registry, "tuist_http_request_duration_nanosecond", "GET", HOST, "read_timeout")
    assert n == 2 and 200 * MS <= total < 450 * MS
    assert count(registry, "tuist_http_request_count", "GET", HOST, "200") == 0


def test_pool_timeout_is_counted_without_a_queue_measurement(server: LoopbackServer,
                                                              registry: Registry) -> None:
    with httpx.Client(limits=httpx.Limits(max_connections=1), timeout=httpx.Timeout(5, pool=0.1)) as client:
        instrument_httpx(client, registry=registry)
        with client.stream("GET", server.url + "/x"), pytest.raises(httpx.PoolTimeout):  # holds the connection
            client.get(server.url + "/y")
    assert count(registry, "tuist_http_request_count", "GET", HOST, "pool_timeout") == 1
    assert count(registry, "tuist_http_queue_count", HOST) == 1  # only the request that got the connection


def test_tls_handshake_shows_up_in_connection_duration(registry: Registry) -> None:
    # The server holds each TLS handshake for 200 ms: that time must land in the connection phase, not in
    # queue, send or receive.
    with LoopbackServer(tls=True, handshake_delay=0.2) as tls, httpx.Client(verify=tls.client_ssl_context()) as c:
        instrument_httpx(c, registry=registry)
        assert c.get(tls.url + "/").status_code == 200
        assert c.get(tls.url + "/").status_code == 200  # reused: no second handshake
    _, connect, n = hist(registry, "tuist_http_connection_duration_nanoseconds", HOST)
    assert n == 1 and 200 * MS <= connect < 400 * MS
    _, queue, _ = hist(registry, "tuist_http_queue_duration_nanoseconds", HOST)
    _, send, _ = hist(registry, "tuist_http_send_duration_nanoseconds", HOST)
    _, receive, _ = hist(registry, "tuist_http_receive_duration_nanoseconds", HOST)
    assert queue < 50 * MS and send < 50 * MS and receive < 50 * MS
    _, total, _ = hist(registry, "tuist_http_request_duration_nanosecond", "GET", HOST, "200")
    assert connect < total < connect + 150 * MS


def test_tls_connection_takes_longer_than_plain_tcp(registry: Registry) -> None:
    plain_registry = Registry()
    with LoopbackServer() as plain, LoopbackServer(tls=True) as tls:
        for _ in range(3):  # three fresh connections each; the sums damp a one-off scheduling delay
            with httpx.Client() as client:
                instrument_httpx(client, registry=plain_registry)
                client.get(plain.url + "/")
            with httpx.Client(verify=tls.client_ssl_context()) as client:
                instrument_httpx(client, registry=registry)
                client.get(tls.url + "/")
    _, tcp_ns, n_tcp = hist(plain_registry, "tuist_http_connection_duration_nanoseconds", HOST)
    _, tls_ns, n_tls = hist(registry, "tuist_http_connection_duration_nanoseconds", HOST)
    assert n_tcp == n_tls == 3
    assert tls_ns > tcp_ns  # the handshake (key exchange and certificate check) is in the connection phase


def test_async_client(server: LoopbackServer, registry: Registry) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=1)) as client:
            instrument_httpx(client, registry=registry)
            responses = await asyncio.gather(*(client.get(server.url + "/x?before=0.2") for _ in range(3)))
            assert [r.status_code for r in responses] == [200] * 3
            await asyncio.sleep(0.2)
            await client.get(server.url + "/x?chunks=2&between=0.2&size=2")

    asyncio.run(main())
    assert count(registry, "tuist_http_request_count", "GET", HOST, "200") == 4
    _, queue, n = hist(registry, "tuist_http_queue_duration_nanoseconds", HOST)
    assert n == 4 and 580 * MS <= queue < 800 * MS
    _, receive, _ = hist(registry, "tuist_http_receive_duration_nanoseconds", HOST)
    assert 800 * MS <= receive < 1100 * MS  # 3 x 200 ms before headers + 200 ms between body chunks
    _, idle, n = hist(registry, "tuist_http_queue_idle_time_nanoseconds", HOST)
    assert n == 4 and 200 * MS <= idle < 350 * MS  # only the last request found its connection idle
    assert count(registry, "tuist_http_connection_count", HOST) == 1


def test_pool_gauges_on_metrics(server: LoopbackServer, registry: Registry) -> None:
    reader = PrometheusReader(registry)

    def gauges() -> tuple[str, str]:
        text = reader.scrape()
        line = {ln.split(" ")[0]: ln.split(" ")[1] for ln in text.splitlines() if ln and not ln.startswith("#")}
        return (line[f'tuist_http_queue_available_connections{{host="{HOST}"}}'],
                line[f'tuist_http_queue_in_use_connections{{host="{HOST}"}}'])

    with httpx.Client(limits=httpx.Limits(max_connections=2)) as client:
        instrument_httpx(client, registry=registry)
        threads = [threading.Thread(target=client.get, args=(server.url + "/x?before=0.4",)) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.2)
        assert gauges() == ("0", "2")
        for t in threads:
            t.join()
        assert gauges() == ("2", "0")
    assert gauges() == ("0", "0")  # the client closed its pool


def test_instrumenting_twice_never_double_counts(server: LoopbackServer, registry: Registry) -> None:
    with httpx.Client() as client:
        instrument_httpx(client, registry=registry)
        instrument_httpx(client, registry=registry)
        instrument_httpx(registry=registry)  # the global mode must not add a second layer either
        client.get(server.url + "/")
    assert count(registry, "tuist_http_request_count", "GET", HOST, "200") == 1
    assert count(registry, "tuist_http_queue_count", HOST) == 1


def test_unsupported_types_raise_type_error_naming_what_is_accepted() -> None:
    with pytest.raises(TypeError, match=r"httpx\.Client, an httpx\.AsyncClient or None.*not str"):
        instrument_httpx("http://127.0.0.1:9")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"httpx\.Client"):
        uninstrument_httpx(object())  # type: ignore[arg-type]


def test_global_mode_instruments_new_clients_only_and_is_reversible(server: LoopbackServer,
                                                                    registry: Registry) -> None:
    existing = httpx.Client()
    instrument_httpx(registry=registry)
    try:
        new = httpx.Client()
        new_async = httpx.AsyncClient()
        assert set(instrumented_clients()) == {new, new_async}
        existing.get(server.url + "/")
        assert count(registry, "tuist_http_request_count", "GET", HOST, "200") == 0
        new.get(server.url + "/")

        async def use_async() -> None:
            async with new_async:
                await new_async.get(server.url + "/")

        asyncio.run(use_async())
        assert count(registry, "tuist_http_request_count", "GET", HOST, "200") == 2
        uninstrument_httpx()
        assert instrumented_clients() == []
        assert "handle_request" not in vars(new._transport)  # the transport is as it was
        later = httpx.Client()
        for c in (new, later):
            c.get(server.url + "/")
        assert count(registry, "tuist_http_request_count", "GET", HOST, "200") == 2
        later.close()
        new.close()
    finally:
        existing.close()


def test_uninstrument_one_client(server: LoopbackServer, registry: Registry) -> None:
    with httpx.Client() as client:
        instrument_httpx(client, registry=registry)
        client.get(server.url + "/")
        uninstrument_httpx(client)
        uninstrument_httpx(client)  # twice is fine
        client.get(server.url + "/")
    assert count(registry, "tuist_http_request_count", "GET", HOST, "200") == 1


def test_failing_trace_callback_never_breaks_the_request(server: LoopbackServer, registry: Registry,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    class Exploding(dict):  # type: ignore[type-arg]
        def get(self, *args: object) -> None:
            raise RuntimeError("trace callback exploded")

    with httpx.Client() as client:
        instrument_httpx(client, registry=registry)
        monkeypatch.setattr(_http_exchange, "EVENTS", Exploding())
        response = client.get(server.url + "/x?size=5")
    assert response.status_code == 200 and response.content == b"xxxxx"
    # the request itself is still counted; only the phases the callback would have timed are missing
    assert count(registry, "tuist_http_request_count", "GET", HOST, "200") == 1
    assert count(registry, "tuist_http_send_count", HOST) == 0


def test_failing_recording_never_breaks_the_request(server: LoopbackServer, registry: Registry,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("registry exploded")

    with httpx.Client() as client:
        instrument_httpx(client, registry=registry)
        monkeypatch.setattr(registry.counter("tuist_http_request_count"), "labels", broken)
        response = client.get(server.url + "/x?size=5")
        with client.stream("GET", server.url + "/x?size=3") as streamed:
            assert streamed.read() == b"xxx"
    assert response.status_code == 200 and response.content == b"xxxxx"


def test_caller_trace_extension_still_runs(server: LoopbackServer, registry: Registry) -> None:
    seen: list[str] = []
    with httpx.Client() as client:
        instrument_httpx(client, registry=registry)
        request = client.build_request("GET", server.url + "/", extensions={"trace": lambda n, i: seen.append(n)})
        client.send(request).read()
        client.send(request).read()  # the same request again: the caller's callback, not ours chained twice
    assert seen.count("http11.send_request_headers.started") == 2
    assert "http11.response_closed.complete" in seen
    assert count(registry, "tuist_http_request_count", "GET", HOST, "200") == 2


def test_spans_and_the_standard_duration_metric(server: LoopbackServer, registry: Registry) -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    metric_reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[metric_reader])
    with httpx.Client() as client:
        instrument_httpx(client, registry=registry, tracer_provider=tracer_provider, meter_provider=meter_provider)
        client.get(server.url + "/x?chunks=2&between=0.2")
        uninstrument_httpx(client)
        client.get(server.url + "/")
    assert [s.name for s in exporter.get_finished_spans()] == ["GET"]
    data = metric_reader.get_metrics_data()
    points = [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
              if m.name == "http.client.duration" for p in m.data.data_points]
    assert sum(p.count for p in points) == 1
    # upstream's duration ends at the response headers; ours includes the 200 ms body
    assert points[0].sum < 100
    _, total, _ = hist(registry, "tuist_http_request_duration_nanosecond", "GET", HOST, "200")
    assert total >= 200 * MS
