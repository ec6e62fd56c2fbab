"""Run every ``bench/bench_*.py`` in turn (``make bench``), print their tables, and exit 1 if any missed its
target (exit code 1) or failed to run.

Each benchmark runs in its own interpreter so one's imports, threads and garbage do not skew another's
timings. ``python bench/run.py core http`` runs only ``bench_core.py`` and ``bench_http.py``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    wanted = set(sys.argv[1:] if argv is None else argv)
    scripts = sorted(p for p in HERE.glob("bench_*.py")
                     if not wanted or p.stem.removeprefix("bench_") in wanted or p.stem in wanted)
    if not scripts:
        print(f"no benchmarks matched {sorted(wanted)} in {HERE}", file=sys.stderr)
        return 2
    results: list[tuple[str, int, float]] = []
    for script in scripts:
        print(f"\n===== {script.name} =====\n", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        results.append((script.name, code, time.perf_counter() - start))
    print("\n===== summary =====\n")
    print("| Benchmark | Result | Seconds |\n| --- | --- | ---: |")
    for name, code, seconds in results:
        verdict = "targets met" if code == 0 else ("TARGET MISSED" if code == 1 else f"FAILED (exit {code})")
        print(f"| {name} | {verdict} | {seconds:.0f} |")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
