"""Runs: ``tuist_runs_total`` and ``tuist_runs_duration_milliseconds``."""

from __future__ import annotations

from telemetry.catalogue import RUNS_DURATION, RUNS_TOTAL
from telemetry.cells import EXACT_MAX, MAX_NUMBER, number, shown
from telemetry.registry import CounterChild, HistogramChild, Registry


class Runs:
    """Record finished ``tuist`` CLI runs."""

    def __init__(self, registry: Registry) -> None:
        self._total = registry.counter(RUNS_TOTAL)
        self._duration = registry.histogram(RUNS_DURATION)
        self._bound: dict[tuple[str, bool, int], tuple[CounterChild, HistogramChild]] = {}

    def record(self, name: str, *, is_ci: bool, status: int, duration_ms: float) -> None:
        """One run of ``tuist <name>``: ``status`` is 0 on success and 1 on failure, as the doc says."""
        # Converted and checked before any series is created or counted, so a bad call leaves no trace on
        # /metrics: the counter and the histogram move together or not at all.
        cls = duration_ms.__class__
        if (cls is not int and cls is not float) or not 0 <= duration_ms <= EXACT_MAX:
            duration_ms = _duration(duration_ms)
        key = (name, is_ci, status)
        pair = self._bound.get(key)
        # True == 1 and hashes alike: without the type checks, is_ci=1 or status=True would hit a cached
        # (True, 1) entry and be accepted only after a valid call had been made.
        if pair is None or is_ci.__class__ is not bool or status.__class__ is not int:
            pair = self._bind(key)
        pair[0].inc()
        pair[1].observe(duration_ms)

    def _bind(self, key: tuple[str, bool, int]) -> tuple[CounterChild, HistogramChild]:
        name, is_ci, status = key
        if not isinstance(is_ci, bool):
            raise ValueError(f"{RUNS_TOTAL}: is_ci must be a bool, got {is_ci!r}")
        if isinstance(status, bool) or status not in (0, 1):
            raise ValueError(f"{RUNS_TOTAL}: status must be 0 (success) or 1 (failure), got {status!r}")
        pair = (self._total.labels(name, is_ci, status), self._duration.labels(name, is_ci, status))
        if len(self._bound) < 4 * self._total.limit:  # bounded like the families' own caches; overflowed too
            self._bound[key] = pair
        return pair


def _duration(value: object) -> float | int:
    converted = number(RUNS_DURATION, value)  # TypeError for bools, text and non-numbers
    if not 0 <= converted <= MAX_NUMBER:
        raise ValueError(f"{RUNS_DURATION}: duration_ms must be finite and >= 0, got {shown(value)}")
    return converted
