"""The multi-process store (telemetry/multiprocess/) with real processes: workers are this module run as
``python -m tests.test_multiprocess_store worker <directory> <limit>``, each recording into its own process
file on commands read from stdin; the test process merges the directory and renders the merged view with the
stock ``Renderer``. No mocks: processes are killed with SIGKILL, forked for real, and files are damaged on
disk.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from telemetry.catalogue import (
    CATALOGUE,
    OVERFLOW_LABEL,
    OVERFLOW_METRIC,
    PROJECTS,
    REPO_READY,
    RUNS_DURATION,
    RUNS_TOTAL,
    USERS,
    Kind,
)
from telemetry.cells import CounterCell, GaugeCell, HistogramCell
from telemetry.exposition.render import Renderer
from telemetry.multiprocess import (
    GAUGE_MODES,
    GaugeMode,
    Merger,
    MultiprocessError,
    ProcessFile,
    compact,
    merged_streams,
)
from telemetry.multiprocess.compact import _write_archive
from telemetry.multiprocess.directory import ARCHIVE, PROCESS_FILE, Reader
from telemetry.multiprocess.layout import HEADER_SIZE, parse_entries
from telemetry.registry import Registry
from telemetry.store import OVERFLOW_VALUES

from .conftest import require_binary

ROOT = Path(__file__).resolve().parent.parent
RUN = ("build", "true", "0")
RUN_ARGS = ["build", True, 0]


# --- the worker side ------------------------------------------------------------------------------------------

def _worker(directory: str, limit: int) -> None:
    process_file = ProcessFile(directory)
    registry = Registry(cells=process_file.cells, cardinality_limit=limit)

    def handle(command: dict[str, Any]) -> Any:
        op = command["op"]
        family: Any = registry[command["metric"]] if "metric" in command else None
        if op == "inc":
            child = family.labels(*command.get("labels", []))
            amount, n = command.get("amount", 1), command.get("n", 1)

            def run() -> None:
                for _ in range(n):
                    child.inc(amount)
            threads = [threading.Thread(target=run) for _ in range(command.get("threads", 1))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        elif op == "many":  # a series per label value (the file grows), and the hot series in between
            hot = family.labels(*RUN_ARGS)
            for i in range(command["n"]):
                family.labels(f"series-{i}", True, 0).inc()
                hot.inc()
        elif op == "observe":
            child = family.labels(*command.get("labels", []))
            for value in command["values"]:
                child.observe(value)
        elif op == "set":
            family.labels(*command.get("labels", [])).set(command["value"])
        elif op == "fork":  # record, fork: the child records and exits; the parent records after it
            counter = registry.counter(RUNS_TOTAL).labels(*RUN_ARGS)
            counter.inc(command["before"])
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    counter.inc(command["child"])
                    registry.counter(RUNS_TOTAL).labels("test", False, 1).inc(command["child"])
                    with open(os.path.join(directory, "child.json"), "w") as f:
                        json.dump({"path": process_file.path, "pid": os.getpid()}, f)
                except BaseException:
                    code = 1
                os._exit(code)
            _, status = os.waitpid(pid, 0)
            counter.inc(command["after"])
            return {"status": status}
        elif op == "path":
            return {"path": process_file.path, "pid": os.getpid()}
        elif op == "exit":
            sys.exit(0)
        return None

    print(json.dumps({"ready": process_file.path}), flush=True)
    for line in sys.stdin:
        print(json.dumps({"ok": handle(json.loads(line))}), flush=True)


def _merge_loop(directory: str, rounds: int) -> None:
    """Merge (and compact) ``rounds`` times, printing the merged runs total each time."""
    registry = Registry()
    for _ in range(rounds):
        print(value(merged_streams(directory, registry), RUNS_TOTAL, RUN), flush=True)


# --- the test side --------------------------------------------------------------------------------------------

class Worker:
    def __init__(self, directory: Path, limit: int = 2000) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.test_multiprocess_store", "worker", str(directory), str(limit)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.path = self._reply()["ready"]

    def _reply(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"worker {self.proc.pid} exited ({self.proc.wait()})"
        return json.loads(line)

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def reply(self) -> Any:
        return self._reply()["ok"]

    def do(self, **command: Any) -> Any:
        self.send(**command)
        return self.reply()

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(op="exit")
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def start(started: list[Worker], directory: Path, n: int = 1, limit: int = 2000) -> list[Worker]:
    new = [Worker(directory, limit) for _ in range(n)]
    started.extend(new)
    return new


def stream_of(merged: list[Any], name: str) -> Any:
    return next(s for s in merged if s.name == name)


def value(merged: list[Any], name: str, labels: tuple[str, ...]) -> Any:
    points, _ = stream_of(merged, name).collect()
    for values, cell in points:
        if values == labels:
            return cell.snapshot() if hasattr(cell, "snapshot") else cell.value
    return None


def render(merged: list[Any], renderer: Renderer | None = None) -> str:
    out: list[str] = []
    (renderer or Renderer()).streams(merged, out, set())
    return "".join(out)


def process_files(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if PROCESS_FILE.fullmatch(n))


# --- tests ----------------------------------------------------------------------------------------------------

def test_three_processes_recording_the_same_series_merge_to_exact_totals(tmp_path: Path,
                                                                         workers: list[Worker]) -> None:
    three = start(workers, tmp_path, 3)
    for w in three:  # all three record at once, two threads each
        w.send(op="inc", metric=RUNS_TOTAL, labels=RUN_ARGS, n=3000, threads=2)
    for w in three:
        w.send(op="observe", metric=RUNS_DURATION, labels=RUN_ARGS, values=[50, 700.5, 4000.25] * 400)
    for w in three:
        w.reply()
        w.reply()
    registry = Registry()
    merged = merged_streams(tmp_path, registry)
    assert value(merged, RUNS_TOTAL, RUN) == 3 * 2 * 3000
    counts, total, count = value(merged, RUNS_DURATION, RUN)
    assert count == 3 * 1200 and sum(counts) == count
    assert counts[0] == 1200 and counts[2] == 1200 and counts[4] == 1200  # <=100, <=1000, <=5000
    assert total == 3 * 400 * (50 + 700.5 + 4000.25)
    text = render(merged)
    assert f'{RUNS_TOTAL}{{name="build",is_ci="true",status="0"}} 18000\n' in text
    assert f'{RUNS_DURATION}_bucket{{name="build",is_ci="true",status="0",le="+Inf"}} 3600\n' in text
    assert f'{RUNS_DURATION}_count{{name="build",is_ci="true",status="0"}} 3600\n' in text
    assert f'{RUNS_DURATION}_sum{{name="build",is_ci="true",status="0"}} {total}\n' in text
    # Stopped, the three are dead processes: folded into the archive, totals unchanged.
    for w in three:
        w.stop()
    merged = merged_streams(tmp_path, registry)
    assert value(merged, RUNS_TOTAL, RUN) == 18000
    assert value(merged, RUNS_DURATION, RUN) == (counts, total, count)
    assert process_files(tmp_path) == [] and (tmp_path / ARCHIVE).exists()


def test_a_reader_merging_while_processes_record_and_grow_never_sees_a_counter_go_back(
        tmp_path: Path, workers: list[Worker]) -> None:
    two = start(workers, tmp_path, 2, limit=10_000)
    for w in two:
        w.send(op="many", metric=RUNS_TOTAL, n=4000)  # 4,000 new series each: the files grow past 64 KiB
    registry = Registry(cardinality_limit=10_000)
    merger = Merger(tmp_path, compact=False)
    seen = []
    while len(seen) < 5 or seen[-1] != 8000:
        merged = merger.streams(registry)
        seen.append(value(merged, RUNS_TOTAL, RUN) or 0)
        assert len(seen) < 10_000
    for w in two:
        w.reply()
    print(f"\n{len(seen)} merges while recording, distinct values seen: {len(set(seen))}")
    assert seen == sorted(seen) and seen[-1] == 8000
    assert len(stream_of(merger.streams(registry), RUNS_TOTAL)) == 4001
    assert all(os.path.getsize(w.path) > 65536 for w in two)


def test_a_sigkilled_process_keeps_its_counts_and_its_file_is_compacted(tmp_path: Path,
                                                                        workers: list[Worker]) -> None:
    a, b = start(workers, tmp_path, 2)
    a.do(op="inc", metric=RUNS_TOTAL, labels=RUN_ARGS, n=1000)
    a.do(op="set", metric=REPO_READY, labels=["main"], value=5)
    b.do(op="inc", metric=RUNS_TOTAL, labels=RUN_ARGS, n=10)
    b.do(op="set", metric=REPO_READY, labels=["main"], value=3)
    registry = Registry()
    merged = merged_streams(tmp_path, registry)
    assert value(merged, RUNS_TOTAL, RUN) == 1010
    assert value(merged, REPO_READY, ("main",)) == 8
    a.kill()  # SIGKILL: no exit handler runs; the page cache keeps what it wrote
    merged = merged_streams(tmp_path, registry)
    assert value(merged, RUNS_TOTAL, RUN) == 1010  # the counter does not go back
    assert value(merged, REPO_READY, ("main",)) == 3  # a dead process's pool holds nothing
    assert os.path.basename(a.path) not in os.listdir(tmp_path)  # folded into the archive, deleted
    assert process_files(tmp_path) == [os.path.basename(b.path)]
    (c,) = start(workers, tmp_path)
    c.do(op="inc", metric=RUNS_TOTAL, labels=RUN_ARGS, n=5)
    assert value(merged_streams(tmp_path, registry), RUNS_TOTAL, RUN) == 1015
    b.kill()
    c.stop()
    merged = merged_streams(tmp_path, registry)
    assert value(merged, RUNS_TOTAL, RUN) == 1015
    assert value(merged, REPO_READY, ("main",)) is None
    assert sorted(os.listdir(tmp_path)) == [ARCHIVE, "directory.lock"]


def test_a_new_process_with_a_reused_pid_does_not_double_count(tmp_path: Path) -> None:
    """Same pid, for real: two process files of this process, one after the other; and a file an earlier run
    with this pid left."""
    registry = Registry()
    first = ProcessFile(tmp_path)
    Registry(cells=first.cells).counter(RUNS_TOTAL).labels(*RUN_ARGS).inc(7)
    first.close()  # this "process" is gone: its lock is released, its file stays
    left = tmp_path / f"{os.getpid()}-{1:016x}.db"  # a file from an earlier run of this pid
    shutil.copyfile(first.path, left)
    size = os.path.getsize(first.path)
    second = ProcessFile(tmp_path)
    try:
        assert os.path.basename(second.path).startswith(f"{os.getpid()}-")
        assert second.path not in (first.path, str(left))
        Registry(cells=second.cells).counter(RUNS_TOTAL).labels(*RUN_ARGS).inc(3)
        reader = Reader(str(tmp_path))
        snap = reader.snapshot()
        assert [(f.name, f.live) for f in snap.files] == [
            (left.name, False), (os.path.basename(first.path), False), (os.path.basename(second.path), True)]
        snap.release()
        reader.close()
        assert os.path.getsize(first.path) == size  # never appended to
        assert value(merged_streams(tmp_path, registry), RUNS_TOTAL, RUN) == 7 + 7 + 3
        assert process_files(tmp_path) == [os.path.basename(second.path)]  # both dead files folded
        assert value(merged_streams(tmp_path, registry), RUNS_TOTAL, RUN) == 17
    finally:
        second.close()


def _dead_file(directory: Path, series: int) -> str:
    """A dead process's file holding ``series`` counter series of 1 and one histogram with one 250.0."""
    process_file = ProcessFile(directory)
    registry = Registry(cells=process_file.cells)
    for i in range(series):
        registry.counter(RUNS_TOTAL).labels(f"cmd{i}", True, 0).inc()
    registry.histogram(RUNS_DURATION).labels(*RUN_ARGS).observe(250.0)
    process_file.close()
    return process_file.path


def test_truncated_and_garbage_files_are_skipped_logged_once_and_never_yield_invalid_numbers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "source"
    source.mkdir()
    original = Path(_dead_file(source, 20)).read_bytes()
    used = int.from_bytes(original[8:16], sys.byteorder)
    entries, end, error = parse_entries(original, HEADER_SIZE, used)
    assert error is None and end == used
    k = [e[2] for e in entries].index(RUNS_TOTAL)  # cmd0..cmd19 are entries k..k+19 (label-less zeros before)
    assert [e[3][0] for e in entries[k:k + 20]] == [f"cmd{i}" for i in range(20)] and entries[-1][2] == RUNS_DURATION
    offsets = [HEADER_SIZE] + [(first + n) * 8 for _, _, _, _, first, n, _ in entries]  # entry boundaries

    def crafted(pid: int, data: bytes) -> Path:
        path = tmp_path / f"{pid}-{pid:016x}.db"
        path.write_bytes(data)
        return path

    good = crafted(101, original)  # intact: 20 + the histogram
    crafted(102, original[:offsets[k + 10] + 30])  # cut inside cmd10's entry: cmd0..9 survive
    garbage = bytearray(original)
    garbage[offsets[k + 5] + 2:offsets[k + 5] + 40] = os.urandom(38)  # cmd5's header and key: cmd0..4 survive
    crafted(103, bytes(garbage))
    crafted(104, os.urandom(4096))  # nothing but garbage
    crafted(105, b"")  # created, never written
    bad_values = bytearray(original)
    struct.pack_into("=d", bad_values, entries[k][4] * 8, math.nan)
    struct.pack_into("=d", bad_values, entries[k + 1][4] * 8, -5.0)
    struct.pack_into("=d", bad_values, entries[-1][4] * 8, 0.5)  # half an observation
    crafted(106, bytes(bad_values))  # NaN and -5 in two counters, half an observation: 18 counters survive
    too_long = bytearray(original)
    too_long[8:16] = (len(original) + 4096).to_bytes(8, sys.byteorder)  # header claims more than there is
    crafted(107, bytes(too_long))
    del good

    registry = Registry()
    caplog.set_level(logging.WARNING, logger="telemetry.multiprocess")
    merger = Merger(tmp_path, compact=False)
    merged = merger.streams(registry)
    points, _ = stream_of(merged, RUNS_TOTAL).collect()
    totals = {values: cell.value for values, cell in points}
    expected = {f"cmd{i}": 1 + (i < 10) + (i < 5) + 1 for i in range(20)}  # 101, 102, 103, 107
    for i in range(20):
        expected[f"cmd{i}"] += i not in (0, 1)  # 106 without its NaN and -5
    assert totals == {(name, "true", "0"): n for name, n in expected.items()}
    counts, total, count = value(merged, RUNS_DURATION, RUN)
    assert count == 2 and total == 500.0  # 101 and 107: the cut, garbled and half-counted ones are left out
    text = render(merged)
    assert "NaN" not in text and " -" not in text
    warned = {r.getMessage().split(": ")[1] for r in caplog.records}
    assert {f"{tmp_path}/{p}-{p:016x}.db" for p in (102, 103, 104, 105, 106, 107)} == warned
    caplog.clear()
    merger.streams(registry)
    assert not caplog.records  # once per file
    # Compaction folds what could be read and deletes every dead file, damaged or not; totals stay.
    assert compact(tmp_path, registry)
    merged = merged_streams(tmp_path, registry)
    assert {values: cell.value for values, cell in stream_of(merged, RUNS_TOTAL).collect()[0]} == totals
    assert value(merged, RUNS_DURATION, RUN) == (counts, total, count)
    assert process_files(tmp_path) == []


def test_the_label_set_limit_holds_for_the_merged_view(tmp_path: Path, workers: list[Worker]) -> None:
    w1, w2, w3 = start(workers, tmp_path, 3, limit=4)
    for worker, names in ((w1, "ab"), (w2, "cd"), (w3, "efghi")):  # one after the other: a..i by time
        for name in names:
            worker.do(op="inc", metric=RUNS_TOTAL, labels=[name, True, 0], amount=2 ** (ord(name) - ord("a")))
    registry = Registry(cardinality_limit=4)
    merged = merged_streams(tmp_path, registry)
    points, overflow = stream_of(merged, RUNS_TOTAL).collect()
    assert [(v[0], c.value) for v, c in points] == [("a", 1), ("b", 2), ("c", 4), ("d", 8)]
    # e..h were w3's own series (beyond the merged limit), i went into w3's own overflow series.
    assert overflow.value == 16 + 32 + 64 + 128 + 256
    text = render(merged)
    assert f'{RUNS_TOTAL}{{{OVERFLOW_LABEL}="true"}} 496\n' in text
    assert value(merged, OVERFLOW_METRIC, (RUNS_TOTAL,)) == 1  # the measurement w3 put into its overflow
    # A new label set later: overflow; existing series keep their labels.
    w1.do(op="inc", metric=RUNS_TOTAL, labels=["j", True, 0], amount=512)
    w1.do(op="inc", metric=RUNS_TOTAL, labels=["a", True, 0], amount=1)
    merged = merged_streams(tmp_path, registry)
    points, overflow = stream_of(merged, RUNS_TOTAL).collect()
    assert [(v[0], c.value) for v, c in points] == [("a", 2), ("b", 2), ("c", 4), ("d", 8)]
    assert overflow.value == 496 + 512
    before = render(merged)
    w1.kill()
    w3.kill()  # into the archive: the same view, the same numbers
    after = render(merged_streams(tmp_path, registry))
    assert after == before
    assert process_files(tmp_path) == [os.path.basename(w2.path)]


def test_gauges_merge_by_their_family_mode(tmp_path: Path, workers: list[Worker]) -> None:
    assert {s.name for s in CATALOGUE if s.kind is Kind.GAUGE} == set(GAUGE_MODES)  # every gauge has a mode
    assert GAUGE_MODES[REPO_READY] is GaugeMode.LIVE_SUM and GAUGE_MODES[PROJECTS] is GaugeMode.LIVE_LATEST
    w1, w2 = start(workers, tmp_path, 2)
    w1.do(op="set", metric=REPO_READY, labels=["main"], value=3)
    w1.do(op="set", metric=PROJECTS, value=10)
    w2.do(op="set", metric=REPO_READY, labels=["main"], value=4)
    w2.do(op="set", metric=PROJECTS, value=12)
    w2.do(op="set", metric=USERS, value=1.5)
    registry = Registry()
    merged = merged_streams(tmp_path, registry)
    assert value(merged, REPO_READY, ("main",)) == 7  # the sum over live processes
    assert value(merged, PROJECTS, ()) == 12  # the latest write, one value
    w1.do(op="set", metric=PROJECTS, value=11)
    text = render(merged_streams(tmp_path, registry))
    assert f"{PROJECTS} 11\n" in text and f'{REPO_READY}{{pool="main"}} 7\n' in text and f"{USERS} 1.5\n" in text
    w2.kill()
    merged = merged_streams(tmp_path, registry)
    assert value(merged, REPO_READY, ("main",)) == 3
    assert value(merged, PROJECTS, ()) == 11
    assert value(merged, USERS, ()) is None  # only the dead process had set it


def test_a_forked_child_records_into_its_own_file(tmp_path: Path, workers: list[Worker]) -> None:
    (parent,) = start(workers, tmp_path)
    parent.do(op="set", metric=REPO_READY, labels=["main"], value=2)
    result = parent.do(op="fork", before=5, child=7, after=11)
    assert result["status"] == 0
    child = json.loads((tmp_path / "child.json").read_text())
    assert child["pid"] != parent.proc.pid and child["path"] != parent.path
    assert os.path.basename(child["path"]).startswith(f"{child['pid']}-")
    registry = Registry()
    merger = Merger(tmp_path, compact=False)
    merged = merger.streams(registry)
    assert value(merged, RUNS_TOTAL, RUN) == 5 + 7 + 11
    assert value(merged, RUNS_TOTAL, ("test", "false", "1")) == 7
    assert value(merged, REPO_READY, ("main",)) == 2  # the parent still holds its lock after the child exited
    snap = Reader(str(tmp_path)).snapshot()
    by_file = {f.path: (f.live, {v: f.values[first] for v, first, _, _ in f.fitting(RUNS_TOTAL, 1, 1, 3)[0].entries})
               for f in snap.files}
    snap.release()
    assert by_file[parent.path] == (True, {RUN: 16.0})  # the child wrote nothing into the parent's file
    assert by_file[child["path"]] == (False, {RUN: 7.0, ("test", "false", "1"): 7.0})
    assert value(merged_streams(tmp_path, registry), RUNS_TOTAL, RUN) == 23  # after compacting the child's


def test_two_mergers_at_once_never_double_fold(tmp_path: Path) -> None:
    for i in range(24):  # 24 dead processes' files
        process_file = ProcessFile(tmp_path)
        Registry(cells=process_file.cells).counter(RUNS_TOTAL).labels(*RUN_ARGS).inc(i + 1)
        process_file.close()
    expected = 24 * 25 // 2
    mergers = [subprocess.Popen([sys.executable, "-m", "tests.test_multiprocess_store", "merge", str(tmp_path),
                                 "15"], cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        outputs = [m.communicate(timeout=60)[0] for m in mergers]
    finally:
        for m in mergers:
            if m.poll() is None:
                m.kill()
                m.wait()
    assert [m.returncode for m in mergers] == [0, 0]
    totals = [int(line) for out in outputs for line in out.split()]
    assert totals == [expected] * 30
    assert sorted(os.listdir(tmp_path)) == [ARCHIVE, "directory.lock"]
    assert value(merged_streams(tmp_path, Registry()), RUNS_TOTAL, RUN) == expected


def test_a_crash_between_the_archive_rename_and_the_deletes_never_double_counts(tmp_path: Path) -> None:
    registry = Registry()
    for amount in (3, 4):
        process_file = ProcessFile(tmp_path)
        Registry(cells=process_file.cells).counter(RUNS_TOTAL).labels(*RUN_ARGS).inc(amount)
        process_file.close()
    (tmp_path / "archive.db.tmp-999").write_bytes(os.urandom(512))  # a compaction that died before its rename
    (tmp_path / f"999-{2:016x}.db.new").write_bytes(b"")  # a process that died making its file
    reader = Reader(str(tmp_path))
    snap = reader.snapshot()
    _write_archive(str(tmp_path), snap, snap.dead, registry)  # renamed into place; then "the crash"
    snap.release()
    reader.close()
    assert len(process_files(tmp_path)) == 2  # still there, but listed as folded by the archive
    merger = Merger(tmp_path, compact=False)
    assert value(merger.streams(registry), RUNS_TOTAL, RUN) == 7
    merger.close()
    assert value(merged_streams(tmp_path, registry), RUNS_TOTAL, RUN) == 7  # the next compaction cleans up
    assert sorted(os.listdir(tmp_path)) == [ARCHIVE, "directory.lock"]


def test_cells_have_the_in_memory_interface_and_errors(tmp_path: Path) -> None:
    with ProcessFile(tmp_path) as process_file:
        registry = Registry(cells=process_file.cells)
        memory = Registry()
        for reg in (registry, memory):
            reg.counter(RUNS_TOTAL).labels(*RUN_ARGS).inc(2)
            reg.histogram(RUNS_DURATION).labels(*RUN_ARGS).observe(5)
            reg.histogram(RUNS_DURATION).labels(*RUN_ARGS).observe_measured(70_000.5)
            reg.gauge(REPO_READY).labels("main").set(4)
            reg.gauge(REPO_READY).labels("main").dec(1.5)
        shared = registry.counter(RUNS_TOTAL).labels(*RUN_ARGS)
        assert isinstance(shared, CounterCell) and shared.value == 2 and shared.labels == RUN
        histogram = registry.histogram(RUNS_DURATION).labels(*RUN_ARGS)
        assert isinstance(histogram, HistogramCell)
        assert histogram.snapshot() == memory.histogram(RUNS_DURATION).labels(*RUN_ARGS).snapshot()
        assert (histogram.min, histogram.max, histogram.exemplars) == (5, 70_000.5, None)
        assert isinstance(registry.gauge(REPO_READY).labels("main"), GaugeCell)
        cases = [(lambda r: r.counter(RUNS_TOTAL).labels(*RUN_ARGS).inc(-1)),
                 (lambda r: r.counter(RUNS_TOTAL).labels(*RUN_ARGS).inc(math.inf)),
                 (lambda r: r.histogram(RUNS_DURATION).labels(*RUN_ARGS).observe(math.nan)),
                 (lambda r: r.histogram(RUNS_DURATION).labels(*RUN_ARGS).observe(-1)),
                 (lambda r: r.gauge(REPO_READY).labels("main").set(math.inf)),
                 (lambda r: r.gauge(REPO_READY).labels("main").inc(math.nan))]
        for case in cases:
            with pytest.raises(ValueError) as ours:
                case(registry)
            with pytest.raises(ValueError) as theirs:
                case(memory)
            assert str(ours.value) == str(theirs.value)
        # observe_measured is in the file at once (nothing waits in memory for a SIGKILL to lose).
        merged = merged_streams(tmp_path, Registry())
        assert value(merged, RUNS_DURATION, RUN) == ([1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0], 70_005.5, 2)
        assert value(merged, REPO_READY, ("main",)) == 2.5
        # The merged view renders as the process's own registry does.
        assert render(merged) == render(registry.streams())
        # The same stream and labels give the same cell (Registry.clear() continues the series).
        registry.clear()
        again = registry.counter(RUNS_TOTAL).labels(*RUN_ARGS)
        assert again is shared
        again.inc()
        assert value(merged_streams(tmp_path, Registry()), RUNS_TOTAL, RUN) == 3


def test_overflow_series_of_a_process_record_into_its_file(tmp_path: Path) -> None:
    with ProcessFile(tmp_path) as process_file:
        registry = Registry(cells=process_file.cells, cardinality_limit=1)
        registry.counter(RUNS_TOTAL).labels("a", True, 0).inc()
        registry.counter(RUNS_TOTAL).labels("b", True, 0).inc(2)  # past this process's limit
        registry.histogram(RUNS_DURATION).labels("a", True, 0).observe(1)
        registry.histogram(RUNS_DURATION).labels("b", True, 0).observe(2)
        merged = merged_streams(tmp_path, Registry(cardinality_limit=1))
        _, overflow = stream_of(merged, RUNS_TOTAL).collect()
        assert overflow.value == 2 and overflow.labels == OVERFLOW_VALUES
        _, hist_overflow = stream_of(merged, RUNS_DURATION).collect()
        assert hist_overflow.snapshot() == ([1] + [0] * 13, 2, 1)
        text = render(merged)
        assert f'{RUNS_DURATION}_count{{{OVERFLOW_LABEL}="true"}} 1\n' in text


def test_a_missing_or_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(MultiprocessError, match=f"'{missing}' does not exist"):
        ProcessFile(missing)
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(MultiprocessError, match="is not a directory"):
        ProcessFile(a_file)
    if os.geteuid() == 0:
        unwritable = Path("/proc")  # root may write anywhere a directory's mode says no; not into procfs
    else:
        unwritable = tmp_path / "ro"
        unwritable.mkdir(mode=0o500)
    with pytest.raises(MultiprocessError, match=f"'{unwritable}' is not writable") as info:
        ProcessFile(unwritable)
    assert isinstance(info.value, ValueError)


def test_file_size_per_series(tmp_path: Path) -> None:
    with ProcessFile(tmp_path) as process_file:
        registry = Registry(cells=process_file.cells, cardinality_limit=10_000)
        start_used = process_file.used
        for i in range(1000):
            registry.counter(RUNS_TOTAL).labels(f"command-{i:04d}", True, 0).inc()
        counter_bytes = (process_file.used - start_used) / 1000
        start_used = process_file.used
        for i in range(1000):
            registry.histogram(RUNS_DURATION).labels(f"command-{i:04d}", True, 0).observe(1)
        histogram_bytes = (process_file.used - start_used) / 1000
    print(f"\nfile size per series: counter (3 labels) {counter_bytes:.0f} B, histogram (3 labels, 13 buckets) "
          f"{histogram_bytes:.0f} B")
    assert counter_bytes <= 88 and histogram_bytes <= 240


def test_promtool_accepts_the_merged_exposition(tmp_path: Path, workers: list[Worker]) -> None:
    binary = require_binary("promtool")
    w1, w2 = start(workers, tmp_path, 2)
    for w in (w1, w2):
        w.do(op="inc", metric=RUNS_TOTAL, labels=RUN_ARGS, n=3)
        w.do(op="observe", metric=RUNS_DURATION, labels=RUN_ARGS, values=[120, 9_000])
        w.do(op="set", metric=REPO_READY, labels=["main"], value=1)
    text = render(merged_streams(tmp_path, Registry()))
    result = subprocess.run([binary, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert "error" not in (result.stdout + result.stderr).lower(), result.stdout + result.stderr


def main(argv: list[str]) -> None:
    role, directory = argv[0], argv[1]
    if role == "worker":
        _worker(directory, int(argv[2]))
    elif role == "merge":
        _merge_loop(directory, int(argv[2]))


if __name__ == "__main__":
    main(sys.argv[1:])
