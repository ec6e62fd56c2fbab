"""Readings of this process for the runtime metrics: CPU time, memory, threads, file descriptors, start time.

``ProcessReader.read()`` is one look at the process, from the first source that works here:

- ``/proc`` (Linux): ``/proc/self/stat`` once (CPU time, threads, resident and virtual memory) and a listing of
  ``/proc/self/fd`` — the files prometheus_client's ``ProcessCollector`` reads, so the numbers agree;
- psutil (a dependency of this package where there is no ``/proc``: macOS, Windows, the BSDs): one ``oneshot()``;
- the standard library when neither is there: ``os.times()`` for CPU, ``/dev/fd`` for descriptors and Python's
  own threads; no memory (``resource``'s ``ru_maxrss`` is the peak, not the current size).

The descriptor limit is the soft ``RLIMIT_NOFILE`` (``resource.getrlimit``: what ``/proc/self/limits`` calls "Max
open files"). The start time is the process's own: on Linux its start in clock ticks after boot
(``/proc/self/stat``) plus the boot time (the wall clock less ``CLOCK_BOOTTIME``, which the kernel counts those
ticks on), with psutil ``Process.create_time()``; only the standard-library fallback has to use the time the
reader was made. It is read once per process (again after a fork).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

PROC = "/proc"
_PAGE_SIZE = resource.getpagesize() if resource is not None else 4096


def _clock_ticks() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100.0


@dataclass(frozen=True)
class Reading:
    """One look at the process; None where this platform cannot tell."""

    cpu_user: float
    cpu_system: float
    threads: int
    resident_bytes: int | None = None
    virtual_bytes: int | None = None
    open_fds: int | None = None
    max_fds: int | None = None


class ProcessReader:
    """Reads this process from ``proc`` (``/proc``) when it can, else from psutil (when ``use_psutil`` and it is
    installed), else from the standard library; ``source`` says which."""

    def __init__(self, proc: str = PROC, *, use_psutil: bool = True) -> None:
        self._stat = os.path.join(proc, "self", "stat")
        self._system_stat = os.path.join(proc, "stat")
        self._fd_dir = os.path.join(proc, "self", "fd")
        self._ticks = _clock_ticks()
        self._made = time.time()
        self._start: tuple[int, float] | None = None  # (pid, start time)
        self._psutil: Any = None
        self._psutil_process: Any = None
        self.source = "stdlib"
        if os.access(self._stat, os.R_OK):
            self.source = "proc"
        elif use_psutil:
            try:  # imported only here: where /proc is read, psutil is not needed (nor a dependency)
                import psutil
            except ImportError:
                pass
            else:
                self._psutil, self.source = psutil, "psutil"

    def read(self) -> Reading:
        if self.source == "proc":
            try:
                return self._read_proc()
            except (OSError, ValueError, IndexError):
                pass
        elif self.source == "psutil":
            try:
                return self._read_psutil()
            except Exception:  # psutil.Error (AccessDenied, ...): the standard library still knows the CPU time
                pass
        return self._read_stdlib()

    def start_time(self) -> float:
        """When this process started, in seconds since the Unix epoch."""
        pid = os.getpid()
        if self._start is None or self._start[0] != pid:
            self._start = (pid, self._read_start_time())
        return self._start[1]

    # --- sources -------------------------------------------------------------------------------------------

    def _stat_fields(self) -> list[bytes]:
        with open(self._stat, "rb") as f:
            # The command name (field 2) is in parentheses and may hold spaces or ")": split after the last one.
            # Index 0 is then field 3 (state).
            return f.read().rsplit(b")", 1)[1].split()

    def _read_proc(self) -> Reading:
        fields = self._stat_fields()
        try:
            fds: int | None = len(os.listdir(self._fd_dir))
        except OSError:
            fds = None
        return Reading(cpu_user=int(fields[11]) / self._ticks, cpu_system=int(fields[12]) / self._ticks,
                       threads=int(fields[17]), virtual_bytes=int(fields[20]),
                       resident_bytes=int(fields[21]) * _PAGE_SIZE, open_fds=fds, max_fds=_max_fds())

    def _process(self) -> Any:
        if self._psutil_process is None or self._psutil_process.pid != os.getpid():
            self._psutil_process = self._psutil.Process()
        return self._psutil_process

    def _read_psutil(self) -> Reading:
        process = self._process()
        with process.oneshot():
            cpu = process.cpu_times()
            memory = process.memory_info()
            threads = process.num_threads()
            fds = process.num_fds() if hasattr(process, "num_fds") else None  # POSIX only
        return Reading(cpu_user=cpu.user, cpu_system=cpu.system, threads=threads, resident_bytes=memory.rss,
                       virtual_bytes=memory.vms, open_fds=fds, max_fds=_max_fds())

    def _read_stdlib(self) -> Reading:
        times = os.times()
        try:
            fds: int | None = len(os.listdir("/dev/fd"))
        except OSError:
            fds = None
        return Reading(cpu_user=times.user, cpu_system=times.system, threads=threading.active_count(),
                       open_fds=fds, max_fds=_max_fds())

    def _read_start_time(self) -> float:
        if self.source == "proc":
            try:
                started_after_boot = int(self._stat_fields()[19]) / self._ticks
                return self._boot_time() + started_after_boot
            except (OSError, ValueError, IndexError):
                pass
        if self.source == "psutil":
            try:
                return float(self._process().create_time())
            except Exception:
                pass
        return self._made

    def _boot_time(self) -> float:
        """The wall-clock time of boot: the wall clock less ``CLOCK_BOOTTIME`` (``/proc/stat``'s ``btime``, which
        prometheus_client adds, is whole seconds, up to one early), else ``btime``."""
        if hasattr(time, "CLOCK_BOOTTIME"):
            return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
        with open(self._system_stat, "rb") as f:
            return float(next(line for line in f if line.startswith(b"btime ")).split()[1])


def _max_fds() -> int | None:
    if resource is None:
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)
