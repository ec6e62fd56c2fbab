"""Multi-process store benchmarks: recording into a process file, merging a directory and rendering it, file size
per series; prometheus_client's multiprocess mode (0.26) as the model to beat.

Prints Markdown tables and exits 1 if a target is missed:

- recording in multi-process mode (``Registry(cells=ProcessFile(d).cells)``) costs at most 1.5x recording in
  process memory (``Registry()``) for ``labels(a,b,c).inc()``, a bound ``.inc()`` and a bound ``.observe(v)``;
- merging 4 process files of 10,000 histogram series each and rendering the merged view
  (``Renderer().streams(merged_streams(d, registry), ...)``) takes at most 2x rendering the same 40,000 series
  from one process's registry (``Renderer().streams(registry.streams(), ...)``), both on a first scrape (new
  merger, new renderer) and on later scrapes (kept merger and renderer, every series changed in between); the
  merged text equals the single-process text.

The process files are made by four ``ProcessFile`` objects in this process (each holds its own lock, so each
is a live process's file to the merge); prometheus_client's files by four worker processes. Timings are the
best of several interleaved rounds with the garbage collector paused, as in bench_core.

Run: ``.venv/bin/python bench/bench_multiprocess.py`` (or ``make bench``).
"""

from __future__ import annotations

import gc
import glob
import itertools
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from telemetry.catalogue import HTTP_REQUEST_COUNT, HTTP_REQUEST_DURATION, RUNS_DURATION, RUNS_TOTAL, spec
from telemetry.exposition.render import Renderer
from telemetry.multiprocess import Merger, ProcessFile
from telemetry.registry import Registry

RECORD_CALLS = 60_000
ROUNDS = 9
FILES = 4
SERIES = 10_000  # per file
RENDER_ROUNDS = 5
PC_SERIES = 1_000  # per prometheus_client worker: its merge takes seconds per thousand histogram series
REQUEST_NS = spec(HTTP_REQUEST_DURATION)

COMMANDS = ("build", "test", "generate", "cache", "share", "run")
LABELS = [(c, ci, st) for c in COMMANDS for ci in ("true", "false") for st in ("0", "1")]
DURATIONS = [float(v) for v in (80, 420, 999, 2_600, 7_000, 45_000, 200_000, 4_000_000)]


def timed(fn: Callable[[], object]) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    finally:
        gc.enable()


# --- recording ------------------------------------------------------------------------------------------------

def recording_contenders(registry: Registry) -> dict[str, Callable[[], None]]:
    labels = list(itertools.islice(itertools.cycle(LABELS), RECORD_CALLS))
    durations = list(itertools.islice(itertools.cycle(DURATIONS), RECORD_CALLS))
    family = registry.counter(RUNS_TOTAL)
    bound = family.labels(*LABELS[0])
    histogram = registry.histogram(RUNS_DURATION).labels(*LABELS[0])

    def labels_inc() -> None:
        for values in labels:
            family.labels(*values).inc()

    def bound_inc() -> None:
        inc = bound.inc
        for _ in labels:
            inc()

    def bound_observe() -> None:
        observe = histogram.observe
        for v in durations:
            observe(v)

    return {"counter `labels(a,b,c).inc()`": labels_inc, "counter bound `.inc()`": bound_inc,
            "histogram bound `.observe(v)`": bound_observe}


def bench_recording(directory: str) -> tuple[list[str], bool]:
    process_file = ProcessFile(directory)
    memory = recording_contenders(Registry())
    shared = recording_contenders(Registry(cells=process_file.cells))
    ns: dict[tuple[str, str], float] = {}
    for _ in range(ROUNDS):  # interleaved: a noisy neighbour slows both alike
        for mode, contenders in (("memory", memory), ("file", shared)):
            for name, fn in contenders.items():
                key = (mode, name)
                ns[key] = min(ns.get(key, float("inf")), timed(fn) / RECORD_CALLS * 1e9)
    lines = [f"### Recording (ns per call, best of {ROUNDS} interleaved rounds of {RECORD_CALLS:,} calls)",
             "", "| Operation | in process memory | in a process file | file / memory | target |",
             "| --- | ---: | ---: | ---: | --- |"]
    ok = True
    for name in memory:
        mem, file = ns[("memory", name)], ns[("file", name)]
        met = file <= 1.5 * mem
        ok &= met
        lines.append(f"| {name} | {mem:,.0f} | {file:,.0f} | {file / mem:.2f}x | <= 1.5x: "
                     f"{'met' if met else 'MISSED'} |")
    process_file.close()
    return lines, ok


# --- merging and rendering ------------------------------------------------------------------------------------

def host(i: int) -> str:
    return f"host-{i:05d}.example.com"


def fill(registry: Registry, first: int, n: int, values: int = 3) -> None:
    """Series ``first``..``first + n`` of the request histogram, ``values`` observations each."""
    family = registry.histogram(HTTP_REQUEST_DURATION)
    for i in range(first, first + n):
        child = family.labels("GET", host(i), ("200", "404", "503")[i % 3])
        for x in (i * 1_000.0, i * 250_000.0 + 0.5, 3e9)[:values]:
            child.observe(x)


def render(streams: Any, renderer: Renderer) -> str:
    out: list[str] = []
    renderer.streams(streams, out, set())
    return "".join(out)


def bench_merge(directory: str) -> tuple[list[str], bool, list[float]]:
    limit = FILES * SERIES * 2
    files = [ProcessFile(directory) for _ in range(FILES)]
    registries = [Registry(cells=f.cells, cardinality_limit=limit) for f in files]
    single = Registry(cardinality_limit=limit)
    for k, registry in enumerate(registries):
        fill(registry, k * SERIES, SERIES)
        fill(single, k * SERIES, SERIES)
    view = Registry(cardinality_limit=limit)
    same = render(Merger(directory).streams(view), Renderer()) == render(single.streams(), Renderer())

    kept_merger, kept_merged, kept_single = Merger(directory), Renderer(), Renderer()
    render(kept_merger.streams(view), kept_merged)
    render(single.streams(), kept_single)

    def change_every_series() -> None:  # untimed, between the kept-state rounds
        for k, registry in enumerate(registries):
            fill(registry, k * SERIES, SERIES, values=1)
            fill(single, k * SERIES, SERIES, values=1)

    scenarios: dict[str, dict[str, Callable[[], object]]] = {
        "first scrape (new merger, new renderer)": {
            "single": lambda: render(single.streams(), Renderer()),
            "merged": lambda: render(Merger(directory).streams(view), Renderer())},
        "later scrapes (kept merger and renderer, every series changed)": {
            "single": lambda: render(single.streams(), kept_single),
            "merged": lambda: render(kept_merger.streams(view), kept_merged)},
    }
    seconds: dict[tuple[str, str], float] = {}
    merge_only = float("inf")
    for _ in range(RENDER_ROUNDS):
        for scenario, contenders in scenarios.items():
            if scenario.startswith("later"):
                change_every_series()
            for name, fn in contenders.items():
                key = (scenario, name)
                seconds[key] = min(seconds.get(key, float("inf")), timed(fn))
        merge_only = min(merge_only, timed(lambda: kept_merger.streams(view)))
    still_same = render(kept_merger.streams(view), Renderer()) == render(single.streams(), Renderer())
    lines = [f"### Merge + render, {FILES} process files x {SERIES:,} histogram series ({len(REQUEST_NS.buckets)} "
             f"buckets, 3 labels) vs one process's {FILES * SERIES:,} (seconds, best of {RENDER_ROUNDS})", "",
             "| Scrape | one process: render | merged: merge + render | merged / one process | target |",
             "| --- | ---: | ---: | ---: | --- |"]
    ok = same and still_same
    for scenario in scenarios:
        one, merged = seconds[(scenario, "single")], seconds[(scenario, "merged")]
        met = merged <= 2 * one
        ok &= met
        lines.append(f"| {scenario} | {one:.3f} | {merged:.3f} | {merged / one:.2f}x | <= 2x: "
                     f"{'met' if met else 'MISSED'} |")
    lines += ["", f"The merge alone (kept merger): {merge_only:.3f} s, {merge_only / (FILES * SERIES) * 1e6:.1f} µs "
              "per series. Merged text identical to the single-process text: "
              f"{'yes' if same and still_same else 'NO'}."]
    histogram_bytes = (files[0].used - 64) / SERIES
    counter_file = ProcessFile(directory)
    counters = Registry(cells=counter_file.cells, cardinality_limit=limit)
    before = counter_file.used
    for i in range(SERIES):
        counters.counter(HTTP_REQUEST_COUNT).labels("GET", host(i), "200").inc()
    counter_bytes = (counter_file.used - before) / SERIES
    for f in [*files, counter_file]:
        f.close()
    return lines, ok, [counter_bytes, histogram_bytes]


# --- prometheus_client's multiprocess mode -------------------------------------------------------------------

PC_WORKER = """
import sys
from prometheus_client import Counter, Histogram
from telemetry.catalogue import HTTP_REQUEST_COUNT, HTTP_REQUEST_DURATION, spec
s, c = spec(HTTP_REQUEST_DURATION), spec(HTTP_REQUEST_COUNT)
h = Histogram(s.name, s.help, s.labels, buckets=s.buckets)
counter = Counter(c.name, c.help, c.labels)
first, n = int(sys.argv[1]), int(sys.argv[2])
for i in range(first, first + n):
    child = h.labels("GET", f"host-{i:05d}.example.com", ("200", "404", "503")[i % 3])
    for x in (i * 1_000.0, i * 250_000.0 + 0.5, 3e9):
        child.observe(x)
    counter.labels("GET", f"host-{i:05d}.example.com", "200").inc()
"""


def bench_prometheus_client(directory: str) -> tuple[list[str], dict[str, float]]:
    """prometheus_client: 4 worker processes' files of PC_SERIES histogram series each, merged and rendered by
    ``generate_latest(MultiProcessCollector)``; ours on the same series."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    pc_dir = os.path.join(directory, "pc")
    ours_dir = os.path.join(directory, "ours")
    os.mkdir(pc_dir)
    os.mkdir(ours_dir)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": pc_dir}
    workers = [subprocess.Popen([sys.executable, "-c", PC_WORKER, str(k * PC_SERIES), str(PC_SERIES)], env=env)
               for k in range(FILES)]
    for worker in workers:
        worker.wait(timeout=300)
    pc_bytes = {"counter": 0.0, "histogram": 0.0}
    for path in glob.glob(os.path.join(pc_dir, "*.db")):  # counter_<pid>.db, histogram_<pid>.db
        with open(path, "rb") as f:
            used = struct.unpack("i", f.read(4))[0] - 8  # the used size, less its 8-byte header
        pc_bytes[os.path.basename(path).split("_")[0]] += used / (FILES * PC_SERIES)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=pc_dir)
    pc_seconds = min(timed(lambda: generate_latest(registry)) for _ in range(2))

    files = [ProcessFile(ours_dir) for _ in range(FILES)]
    for k, f in enumerate(files):
        fill(Registry(cells=f.cells), k * PC_SERIES, PC_SERIES)
    view = Registry()
    ours_seconds = min(timed(lambda: render(Merger(ours_dir).streams(view), Renderer()).encode())
                       for _ in range(RENDER_ROUNDS))
    for f in files:
        f.close()
    lines = [f"### Against prometheus_client's multiprocess mode: {FILES} worker files x {PC_SERIES:,} histogram "
             "series (and as many counters for prometheus_client), merged and rendered (first scrape, seconds)", "",
             "| prometheus_client `generate_latest(MultiProcessCollector)` | ours | prometheus_client / ours |",
             "| ---: | ---: | ---: |",
             f"| {pc_seconds:.3f} | {ours_seconds:.3f} | {pc_seconds / ours_seconds:.0f}x |"]
    return lines, pc_bytes


def main() -> int:
    print("## bench_multiprocess: recording into process files, merge + render, file size\n")
    print(f"Python {sys.version.split()[0]}\n")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-multiprocess-") as directory:
        for sub in ("recording", "merge"):
            os.mkdir(os.path.join(directory, sub))
        recording, recording_ok = bench_recording(os.path.join(directory, "recording"))
        print("\n".join(recording), end="\n\n")
        merging, merge_ok, (counter_bytes, histogram_bytes) = bench_merge(os.path.join(directory, "merge"))
        print("\n".join(merging), end="\n\n")
        pc_lines, pc_bytes = bench_prometheus_client(directory)
        print("\n".join(pc_lines), end="\n\n")
    print("### File size per series (bytes of the file in use)\n\n| Series | ours | prometheus_client |\n"
          "| --- | ---: | ---: |")
    print(f"| counter (3 labels) | {counter_bytes:,.0f} | {pc_bytes['counter']:,.0f} |")
    print(f"| histogram (3 labels, {len(REQUEST_NS.buckets)} buckets) | {histogram_bytes:,.0f} | "
          f"{pc_bytes['histogram']:,.0f} |", end="\n\n")
    ok = recording_ok and merge_ok
    print(f"bench_multiprocess: {'all targets met' if ok else 'TARGET MISSED'} ({time.perf_counter() - started:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
