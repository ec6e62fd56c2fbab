"""Health checks: liveness (the process answers) and readiness (its dependencies answer), each with a timeout.

A check is a plain callable that raises when the dependency is unusable (``SELECT 1``, a Redis ``PING``).
``Health.ready()`` runs every check at once on its own daemon thread and waits at most the check's timeout,
so a hung database makes readiness fail in about a second instead of hanging the probe. The result is a
status code (200 or 503) and a JSON-ready body naming each check and, on failure, what went wrong.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    duration_ms: float
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": "ok" if self.ok else "failing", "duration_ms": round(self.duration_ms, 2)}
        if self.error:
            out["error"] = self.error
        return out


class _Attempt:
    """One run of a check on its own daemon thread; probes that arrive while it runs wait on it too."""

    def __init__(self, run: Callable[[], object]) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.started = time.perf_counter()
        threading.Thread(target=self._target, args=(run,), name="health-check", daemon=True).start()

    def _target(self, run: Callable[[], object]) -> None:
        try:
            run()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()


@dataclass
class _Check:
    name: str
    run: Callable[[], object]
    timeout: float
    # A check still running from an earlier probe (hung on a dead socket) is not started again: later probes
    # wait on the same attempt, so a hung dependency costs one thread, not one per probe.
    attempt: _Attempt | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class Health:
    """Named readiness checks. ``live()`` never touches a dependency."""

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        if not timeout > 0:
            raise ValueError(f"health check timeout must be above 0 seconds, got {timeout!r}")
        self.timeout = timeout
        self._checks: dict[str, _Check] = {}

    def add(self, name: str, check: Callable[[], object], *, timeout: float | None = None) -> None:
        """Register ``check`` under ``name``; it fails the readiness probe by raising or by overrunning."""
        if name in self._checks:
            raise ValueError(f"a health check named {name!r} is already registered")
        self._checks[name] = _Check(name, check, self.timeout if timeout is None else timeout)

    def live(self) -> tuple[int, dict[str, Any]]:
        return 200, {"status": "ok"}

    def ready(self) -> tuple[int, dict[str, Any]]:
        """Run every check concurrently; 200 when all pass, else 503 with the failing checks named."""
        waits = [(check, self._start(check)) for check in self._checks.values()]
        results = [wait() for _, wait in waits]
        return self.report(results)

    async def ready_async(self) -> tuple[int, dict[str, Any]]:
        """``ready()`` without blocking the event loop."""
        return await asyncio.to_thread(self.ready)

    @staticmethod
    def report(results: list[CheckResult]) -> tuple[int, dict[str, Any]]:
        failing = [r.name for r in results if not r.ok]
        body: dict[str, Any] = {"status": "not_ready" if failing else "ready",
                                "checks": {r.name: r.as_dict() for r in results}}
        if failing:
            body["failing"] = failing
        return (503 if failing else 200), body

    def _start(self, check: _Check) -> Callable[[], CheckResult]:
        start = time.perf_counter()
        with check.lock:
            attempt = check.attempt
            if attempt is None or attempt.done.is_set():
                attempt = check.attempt = _Attempt(check.run)

        def wait() -> CheckResult:
            finished = attempt.done.wait(max(check.timeout - (time.perf_counter() - start), 0.0))
            elapsed = (time.perf_counter() - start) * 1000
            if not finished:
                return CheckResult(check.name, False, elapsed, f"timed out after {check.timeout:g} s")
            if attempt.error is not None:
                return CheckResult(check.name, False, elapsed,
                                   f"{type(attempt.error).__name__}: {attempt.error}"[:500])
            return CheckResult(check.name, True, elapsed)
        return wait
