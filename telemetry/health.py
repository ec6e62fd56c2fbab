"""Health checks: liveness (the process answers) and readiness (its dependencies answer), each with a timeout.

A check is a plain callable that raises when the dependency is unusable (``SELECT 1``, a Redis ``PING``).
``Health.ready()`` runs every check at once on its own daemon thread and waits at most the check's timeout
(one in-flight attempt per check, shared by concurrent probes; ``ready_async`` awaits it on the event loop),
so a hung database makes readiness fail in about a second instead of hanging the probe. The result is a
status code (200 or 503) and a JSON-ready body naming each check and, on failure, what went wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
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
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        threading.Thread(target=self._target, args=(run,), name="health-check", daemon=True).start()

    def _target(self, run: Callable[[], object]) -> None:
        try:
            run()
        except BaseException as exc:
            self.error = exc
        finally:
            with self._lock:
                self.done.set()
                callbacks, self._callbacks = self._callbacks, []
            for callback in callbacks:
                callback()

    def discard(self, callback: Callable[[], None]) -> None:
        """Forget a callback whose probe stopped waiting (a hung check must not collect one per probe)."""
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    def on_done(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the check's thread) when the attempt ends; at once if it already has."""
        with self._lock:
            if not self.done.is_set():
                self._callbacks.append(callback)
                return
        callback()


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
        """``ready()`` without blocking the event loop, and without a worker thread per probe: each probe
        awaits the check's shared in-flight attempt on the loop, so 20 concurrent probes of a hung dependency
        all answer within the check's timeout (a thread pool of a few workers would queue them)."""
        results = await asyncio.gather(*(self._wait_async(check) for check in self._checks.values()))
        return self.report(list(results))

    async def _wait_async(self, check: _Check) -> CheckResult:
        start = time.perf_counter()
        attempt = self._attempt(check)
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not finished.done():
                finished.set_result(None)

        def from_thread() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed after the probe timed out
                loop.call_soon_threadsafe(wake)

        attempt.on_done(from_thread)
        try:
            await asyncio.wait_for(finished, max(check.timeout - (time.perf_counter() - start), 0.0))
        except TimeoutError:
            attempt.discard(from_thread)
        return self._result(check, attempt, start)

    @staticmethod
    def report(results: list[CheckResult]) -> tuple[int, dict[str, Any]]:
        failing = [r.name for r in results if not r.ok]
        body: dict[str, Any] = {"status": "not_ready" if failing else "ready",
                                "checks": {r.name: r.as_dict() for r in results}}
        if failing:
            body["failing"] = failing
        return (503 if failing else 200), body

    @staticmethod
    def _attempt(check: _Check) -> _Attempt:
        """The check's in-flight attempt, started if none is running (single flight per check)."""
        with check.lock:
            attempt = check.attempt
            if attempt is None or attempt.done.is_set():
                attempt = check.attempt = _Attempt(check.run)
            return attempt

    @staticmethod
    def _result(check: _Check, attempt: _Attempt, start: float) -> CheckResult:
        elapsed = (time.perf_counter() - start) * 1000
        if not attempt.done.is_set():
            return CheckResult(check.name, False, elapsed, f"timed out after {check.timeout:g} s")
        if attempt.error is not None:
            return CheckResult(check.name, False, elapsed, f"{type(attempt.error).__name__}: {attempt.error}"[:500])
        return CheckResult(check.name, True, elapsed)

    def _start(self, check: _Check) -> Callable[[], CheckResult]:
        start = time.perf_counter()
        attempt = self._attempt(check)

        def wait() -> CheckResult:
            attempt.done.wait(max(check.timeout - (time.perf_counter() - start), 0.0))
            return self._result(check, attempt, start)
        return wait
