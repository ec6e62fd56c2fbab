"""Runtime metrics: names, types and help on /metrics (the catalogue's ``RUNTIME`` table, and exactly
prometheus_client's for its ``ProcessCollector`` names), values that match the process, the process's real start
time, one reading per collection, and the readings where there is no /proc (psutil, the standard library)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from telemetry import catalogue as cat
from telemetry.exposition.labels import label_name
from telemetry.exposition.reader import PrometheusReader
from telemetry.exposition.render import otel_name
from telemetry.instrumentation.process import ProcessReader, Reading
from telemetry.instrumentation.runtime import RuntimeMetrics
from telemetry.testing import parse_exposition, sample_total, sample_value

ROOT = Path(__file__).resolve().parent.parent
CPU_MODE = label_name(cat.CPU_MODE)


def runtime_reader(process: ProcessReader | None = None, **info: str) -> tuple[PrometheusReader, MeterProvider]:
    reader = PrometheusReader(None, target_info=False)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    RuntimeMetrics(provider.get_meter("telemetry.runtime"), process=process, **info)
    return reader, provider


@pytest.fixture
def reader() -> Iterator[PrometheusReader]:
    reader, provider = runtime_reader(service_name="svc", service_version="1.0", git_sha="abc123")
    yield reader
    provider.shutdown()


def headers(text: str) -> dict[str, tuple[str, str]]:
    """family -> (type, help) from the ``# TYPE`` and ``# HELP`` lines."""
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", text, re.M))
    return {name: (kind, helps[name]) for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)}


def proc_stat(pid: int | str = "self") -> list[str]:
    """/proc/<pid>/stat's fields after the command name (index 0 is field 3)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def test_names_types_and_help_are_the_catalogues(reader: PrometheusReader) -> None:
    assert headers(reader.scrape()) == {s.name: (s.kind.value, s.help) for s in cat.RUNTIME}
    for s in cat.RUNTIME:  # the name is what the standard OpenTelemetry naming makes of the instrument
        counter = s.kind is cat.Kind.COUNTER
        assert otel_name(s.instrument, s.unit, counter=counter, gauge=not counter) == s.name


def test_prometheus_client_names_types_help_and_values(reader: PrometheusReader) -> None:
    """The six ProcessCollector families: the same # HELP and # TYPE lines as prometheus_client writes, and the
    same values, read right after ours."""
    ours = reader.scrape()
    theirs_registry = CollectorRegistry()
    ProcessCollector(registry=theirs_registry)
    theirs = generate_latest(theirs_registry).decode()
    compat = {s.name for s in cat.RUNTIME if s.prometheus_client}
    assert set(headers(theirs)) == compat
    for name in compat:
        assert headers(ours)[name] == headers(theirs)[name]
    value = {name: (sample_value(ours, name), sample_value(theirs, name)) for name in compat}
    assert value[cat.PROCESS_MAX_FDS][0] == value[cat.PROCESS_MAX_FDS][1]
    assert abs(value[cat.PROCESS_OPEN_FDS][0] - value[cat.PROCESS_OPEN_FDS][1]) <= 2
    ours_cpu, their_cpu = value[cat.PROCESS_CPU_SECONDS]
    assert 0 < ours_cpu <= their_cpu <= ours_cpu + 0.1
    for name in (cat.PROCESS_RESIDENT_MEMORY, cat.PROCESS_VIRTUAL_MEMORY):
        ours_bytes, their_bytes = value[name]
        assert ours_bytes > 1e6 and their_bytes == pytest.approx(ours_bytes, rel=0.05), name
    # prometheus_client adds /proc/stat's btime, whole seconds: up to one second before the real boot time.
    ours_start, their_start = value[cat.PROCESS_START_TIME]
    assert 0 <= ours_start - their_start < 1.0


def test_values_match_the_process(reader: PrometheusReader) -> None:
    def cpu(text: str) -> float:
        return sample_total(text, cat.PROCESS_CPU_TIME)

    before = reader.scrape()
    until = time.process_time() + 0.3
    while time.process_time() < until:  # burn CPU so user time visibly grows
        pass
    stop = threading.Event()
    extra = threading.Thread(target=stop.wait)
    extra.start()
    try:
        after = reader.scrape()
    finally:
        stop.set()
        extra.join()
    assert cpu(after) >= cpu(before) + 0.25
    assert cpu(after) <= sum(os.times()[:2]) + 0.01
    assert {s.labels[CPU_MODE] for s in parse_exposition(after) if s.name == cat.PROCESS_CPU_TIME} == {"user",
                                                                                                      "system"}
    rss = sample_value(after, cat.PROCESS_MEMORY_USAGE)
    assert rss is not None and 5e6 < rss < 5e9
    fds = sample_value(after, cat.PROCESS_OPEN_FILE_DESCRIPTORS)
    assert fds == pytest.approx(len(os.listdir("/proc/self/fd")), abs=3)
    # Other tests' daemon threads may come and go: compare with the OS's count read right after.
    threads_now = int(proc_stat()[17])
    threads = sample_value(after, cat.PROCESS_THREADS)
    assert threads is not None and threads >= 2 and abs(threads - threads_now) <= 2
    assert sample_value(after, cat.PROCESS_UPTIME) > sample_value(before, cat.PROCESS_UPTIME)  # type: ignore[operator]
    assert sample_total(after, cat.CPYTHON_GC_COLLECTIONS, cpython_gc_generation="0") >= 0


class CountingReader(ProcessReader):
    reads = 0

    def read(self) -> Reading:
        self.reads += 1
        return super().read()


def test_one_reading_per_collection_feeds_both_sets_of_names() -> None:
    process = CountingReader()
    memory = InMemoryMetricReader()
    prometheus = PrometheusReader(None, target_info=False)
    provider = MeterProvider(metric_readers=[prometheus, memory], shutdown_on_exit=False)
    try:
        RuntimeMetrics(provider.get_meter("telemetry.runtime"), process=process)
        texts = [prometheus.scrape() for _ in range(3)]
        assert process.reads == 3
        memory.get_metrics_data()  # another reader's collection: one more reading, not one per family
        assert process.reads == 4
    finally:
        provider.shutdown()
    for text in texts:  # the semantic-convention and the prometheus_client names show the same reading
        assert sample_value(text, cat.PROCESS_RESIDENT_MEMORY) == sample_value(text, cat.PROCESS_MEMORY_USAGE)
        assert sample_value(text, cat.PROCESS_OPEN_FDS) == sample_value(text, cat.PROCESS_OPEN_FILE_DESCRIPTORS)
        assert sample_value(text, cat.PROCESS_CPU_SECONDS) == pytest.approx(sample_total(text, cat.PROCESS_CPU_TIME),
                                                                            abs=1e-9)


_LATE_SETUP = """
import sys, time
from telemetry.catalogue import PROCESS_START_TIME, PROCESS_UPTIME
from telemetry.testing import isolated, sample_value
time.sleep(float(sys.argv[1]))
with isolated() as t:
    text = t.scrape()
    print(sample_value(text, PROCESS_START_TIME), sample_value(text, PROCESS_UPTIME), time.time(), flush=True)
sys.stdin.read()  # stays alive until the test has read its /proc/<pid>/stat
"""


def test_start_time_is_when_the_process_started_not_when_setup_ran() -> None:
    delay = 2.0
    launched = time.time()
    child = subprocess.Popen([sys.executable, "-c", _LATE_SETUP, str(delay)], cwd=ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        start, uptime, set_up = (float(v) for v in child.stdout.readline().split())
        # The kernel's own account, read independently: clock ticks after boot plus /proc/stat's btime.
        btime = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
        kernel_start = btime + int(proc_stat(child.pid)[19]) / os.sysconf("SC_CLK_TCK")
    finally:
        assert child.stdin is not None
        child.stdin.close()
        assert child.wait(timeout=30) == 0
    assert abs(start - kernel_start) < 1.0
    assert abs(start - launched) < 1.0
    assert set_up - start >= delay - 0.2
    assert uptime >= delay - 0.2


def test_a_forked_child_reports_its_own_start_time() -> None:
    """A reader made before a fork (a gunicorn master that set up telemetry before forking workers) gives the
    child its own start, not the parent's."""
    process = ProcessReader()
    parent_start = process.start_time()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once
        try:
            kernel = int(proc_stat()[19]) / os.sysconf("SC_CLK_TCK")
            os.write(write_end, f"{process.start_time()} {kernel}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end) as f:
            child_start, child_ticks_after_boot = (float(v) for v in f.read().split())
    finally:
        os.waitpid(pid, 0)
    assert child_start > parent_start
    assert child_start == pytest.approx(process.start_time() + child_ticks_after_boot
                                        - int(proc_stat()[19]) / os.sysconf("SC_CLK_TCK"), abs=0.05)
    assert process.start_time() == parent_start


def test_without_proc_psutil_reads_the_same_process(tmp_path: Path) -> None:
    on_proc = ProcessReader()
    without = ProcessReader(str(tmp_path / "no-proc"))
    assert (on_proc.source, without.source) == ("proc", "psutil")
    reader, provider = runtime_reader(without)
    try:
        text = reader.scrape()
        reference = on_proc.read()
    finally:
        provider.shutdown()
    for s in cat.RUNTIME:
        assert any(sample.name == s.name for sample in parse_exposition(text)), f"{s.name} missing without /proc"
    assert sample_value(text, cat.PROCESS_RESIDENT_MEMORY) == pytest.approx(reference.resident_bytes, rel=0.05)
    assert sample_value(text, cat.PROCESS_VIRTUAL_MEMORY) == pytest.approx(reference.virtual_bytes, rel=0.05)
    assert sample_value(text, cat.PROCESS_OPEN_FDS) == pytest.approx(reference.open_fds, abs=2)
    assert sample_value(text, cat.PROCESS_MAX_FDS) == reference.max_fds
    assert sample_value(text, cat.PROCESS_THREADS) == pytest.approx(reference.threads, abs=2)
    assert sample_value(text, cat.PROCESS_START_TIME) == pytest.approx(on_proc.start_time(), abs=1.0)
    assert sample_value(text, cat.PROCESS_CPU_SECONDS) == pytest.approx(reference.cpu_user + reference.cpu_system,
                                                                        abs=0.1)


def test_without_proc_or_psutil_the_standard_library_reads_what_it_can(tmp_path: Path) -> None:
    made = time.time()
    process = ProcessReader(str(tmp_path / "no-proc"), use_psutil=False)
    assert process.source == "stdlib"
    reader, provider = runtime_reader(process)
    try:
        text = reader.scrape()
    finally:
        provider.shutdown()
    names = {s.name for s in parse_exposition(text)}
    # No current memory size in the standard library: no sample rather than a wrong one.
    assert {cat.PROCESS_RESIDENT_MEMORY, cat.PROCESS_VIRTUAL_MEMORY, cat.PROCESS_MEMORY_USAGE}.isdisjoint(names)
    cpu = sample_value(text, cat.PROCESS_CPU_SECONDS)
    assert cpu is not None and cpu == pytest.approx(sum(os.times()[:2]), abs=0.1)
    assert sample_value(text, cat.PROCESS_OPEN_FDS) == pytest.approx(len(os.listdir("/dev/fd")), abs=2)
    assert sample_value(text, cat.PROCESS_THREADS) == pytest.approx(threading.active_count(), abs=2)
    assert sample_value(text, cat.PROCESS_START_TIME) == pytest.approx(made, abs=1.0)


def test_info_metrics_carry_versions(reader: PrometheusReader) -> None:
    import platform
    from importlib import metadata

    samples = parse_exposition(reader.scrape())
    info = [dict(s.labels) for s in samples if s.name == cat.APPLICATION_INFO and s.value == 1]
    assert info == [{"service_name": "svc", "service_version": "1.0", "git_sha": "abc123",
                     "python_version": platform.python_version(),
                     "python_implementation": platform.python_implementation()}]
    deps = {s.labels["name"]: s.labels["version"] for s in samples if s.name == cat.APPLICATION_DEPENDENCY_INFO}
    assert deps["opentelemetry-sdk"] == metadata.version("opentelemetry-sdk") == "1.45.1"
    assert deps["tuist-telemetry"] == metadata.version("tuist-telemetry")


def test_unset_info_values_are_left_out() -> None:
    reader, provider = runtime_reader()
    try:
        text = reader.scrape()
    finally:
        provider.shutdown()
    [line] = [x for x in text.splitlines() if x.startswith(f"{cat.APPLICATION_INFO}{{")]
    assert "service_name" not in line and 'git_sha=""' not in line and "python_version=" in line
