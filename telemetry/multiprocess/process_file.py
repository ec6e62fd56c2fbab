"""One process's file: created new in the directory, locked for the process's lifetime, memory-mapped and grown
as needed; its ``cells`` method is a ``telemetry.store.CellFactory``, so ``Registry(cells=ProcessFile(d).cells)``
records into it.

Naming and reuse: the file is ``<pid>-<time.time_ns() in 16 hex digits>.db``, never an existing one: it is
made as ``<name>.db.new`` with ``O_EXCL``, locked ``LOCK_EX``, given its header, and published with a hard
link, which fails rather than replace a file (a clash takes the next nanosecond). So a process never opens a
file an earlier process left, even one with the same pid: that file stays a dead process's file, counted
once and folded by compaction; and readers never see a file without its header or its lock. All this under
the directory lock held shared, so no compaction runs meanwhile.

Each series is one entry, appended once (``cells`` returns the same cell for the same stream name, labels
and shape: a second Registry on the file, or ``Registry.clear()``, continues the series, so merged counters
never go back). Growing maps the bigger file anew and points every cell at the new mapping; the old mapping
stays valid for a write already under way (both map the same pages).

Fork: ``os.register_at_fork(after_in_child=...)`` gives the child its own file at once: a copy of the
parent's table with every slot zeroed (so cells keep their slot indices), cells reset to zero with new locks,
and the inherited descriptor of the parent's file closed (closed, not unlocked: ``LOCK_UN`` would drop the
parent's lock, which the parent and child share through the one open file description). Measured on this
project's 2-core machine: checking ``os.getpid()`` on every record costs ~240 ns (it is a system call),
about the whole cost of a bound ``inc()``; the fork hook costs nothing per record. ``cells`` still compares
the pid (allocation is rare) for a fork that bypassed Python's fork hooks.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import threading
import time
import weakref
from array import array
from typing import Any

from telemetry.cells import Cell
from telemetry.multiprocess.cells import SharedCell, SharedCounterCell, SharedGaugeCell, SharedHistogramCell
from telemetry.multiprocess.directory import LOCK, NEW, open_lock, process_file_name
from telemetry.multiprocess.errors import MultiprocessError
from telemetry.multiprocess.layout import (
    COUNTER,
    GAUGE,
    HEADER_SIZE,
    KIND_CODES,
    OVERFLOW,
    USED_WORD,
    encode_key,
    entry_size,
    initial_slots,
    slot_count,
    walk_slots,
    write_entry,
    write_header,
)
from telemetry.store import OVERFLOW_VALUES, Stream

_log = logging.getLogger(__name__)

INITIAL_SIZE = 1 << 16
_open_files: weakref.WeakSet[ProcessFile] = weakref.WeakSet()


def _check_directory(directory: str) -> None:
    if not os.path.exists(directory):
        raise MultiprocessError(f"multi-process directory {directory!r} does not exist")
    if not os.path.isdir(directory):
        raise MultiprocessError(f"multi-process directory {directory!r} is not a directory")


class ProcessFile:
    """This process's file in ``directory``; ``cells`` is the cell factory recording into it."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        _check_directory(self.directory)
        self._lock = threading.Lock()
        self._cells: dict[tuple[str, tuple[str, ...], int, int, int], SharedCell] = {}
        self.closed = False
        self._create(INITIAL_SIZE)
        _open_files.add(self)

    # -- the file -----------------------------------------------------------------------------------------
    def _create(self, size: int) -> None:
        """Create, lock and map a new file of ``size`` bytes with an empty table."""
        directory = self.directory
        try:
            lock_fd = open_lock(directory)
        except OSError as e:
            raise MultiprocessError(f"multi-process directory {directory!r} is not writable: cannot create "
                                    f"{LOCK} ({e.strerror or e})") from e
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_SH)  # no compaction while the file is being made
            pid = os.getpid()
            created = time.time_ns()
            while True:
                name = process_file_name(pid, created)
                path = os.path.join(directory, name)
                published = self._make(path, size, pid, created)
                if published is not None:
                    break
                created += 1  # that name exists: the next nanosecond
        finally:
            os.close(lock_fd)
        fd, mm = published
        self.path = path
        self.pid = pid
        self._fd = fd
        self._mm: Any = mm
        self._capacity = size
        self._used = HEADER_SIZE
        self._last_created = 0
        self._words: Any = memoryview(mm).cast("d")  # slots
        self._qwords: Any = memoryview(mm).cast("Q")  # the header's ``used``

    def _make(self, path: str, size: int, pid: int, created: int) -> tuple[int, mmap.mmap] | None:
        """Make ``path`` (``O_EXCL`` on ``path.new``, locked, sized, with its header) and publish it with a hard
        link, which fails rather than replace a file; None when the name is taken."""
        if os.path.lexists(path):
            return None
        tmp = path + NEW
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return None
        except OSError as e:
            raise MultiprocessError(f"multi-process directory {self.directory!r} is not writable: cannot create "
                                    f"{os.path.basename(tmp)} ({e.strerror or e})") from e
        mm: mmap.mmap | None = None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size)
            write_header(mm, used=HEADER_SIZE, pid=pid, created=created)
            try:
                os.link(tmp, path)
            except FileExistsError:
                mm.close()
                os.close(fd)
                return None
            except OSError:  # a filesystem without hard links: the name was free a moment ago
                os.rename(tmp, path)
            return fd, mm
        except OSError as e:
            if mm is not None:
                mm.close()
            os.close(fd)
            raise MultiprocessError(f"multi-process directory {self.directory!r}: cannot set up "
                                    f"{os.path.basename(path)} ({e.strerror or e})") from e
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    @property
    def used(self) -> int:
        """Bytes of the file in use."""
        return self._used

    def __len__(self) -> int:
        """Entries (series) in the file."""
        return len(self._cells)

    def _grow(self, needed: int) -> None:
        capacity = self._capacity
        while capacity < needed:
            capacity *= 2
        if isinstance(self._mm, bytearray):  # closed: a private buffer
            mm: Any = bytearray(capacity)
            mm[:self._used] = self._mm[:self._used]
        else:
            os.ftruncate(self._fd, capacity)
            mm = mmap.mmap(self._fd, capacity)
        words = memoryview(mm).cast("d")
        for cell in self._cells.values():
            cell._buf = words
        self._mm, self._words, self._qwords, self._capacity = mm, words, memoryview(mm).cast("Q"), capacity

    def _append(self, kind: int, flags: int, key: bytes, slots: int) -> int:
        """Append an entry; returns its first slot's word index."""
        used = self._used
        end = used + entry_size(key, slots)
        if end > self._capacity:
            self._grow(end)
        created = max(time.time_ns(), self._last_created)
        self._last_created = created
        first = write_entry(self._mm, used, kind, flags, key, initial_slots(kind, slots), created)
        self._used = end
        self._qwords[USED_WORD] = end  # publish: one 8-byte store, after the entry is complete
        return first

    # -- the cell factory ---------------------------------------------------------------------------------
    def cells(self, stream: Stream, labels: tuple[str, ...]) -> Cell:
        """The cell of one series of ``stream`` (``labels`` is ``OVERFLOW_VALUES`` for its overflow series)."""
        kind = KIND_CODES[stream.kind]
        overflow = labels is OVERFLOW_VALUES
        slots = slot_count(kind, len(stream.buckets))
        ident = (stream.name, labels, overflow, kind, slots)
        with self._lock:
            if os.getpid() != self.pid and not self.closed:
                self._after_fork()  # a fork that did not run Python's fork hooks
            cell = self._cells.get(ident)
            if cell is not None:
                return cell
            key = encode_key(stream.name, () if overflow else labels)
            first = self._append(kind, OVERFLOW if overflow else 0, key, slots)
            metric = stream.spec.name
            if kind == COUNTER:
                cell = SharedCounterCell(metric, labels, self._words, first)
            elif kind == GAUGE:
                cell = SharedGaugeCell(metric, labels, self._words, first)
            else:
                cell = SharedHistogramCell(metric, labels, stream.buckets, self._words, first)
            self._cells[ident] = cell
            return cell

    # -- lifetime -----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the file (it becomes a dead process's file, folded by a later compaction). Cells keep
        working on a private copy in memory; what they record from now on is not shared."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            private = bytearray(self._capacity)
            private[:self._used] = self._mm[:self._used]
            self._detach(private)
            os.close(self._fd)  # releases the lock
            self._fd = -1

    def _detach(self, buf: bytearray) -> None:
        """Point every cell at ``buf`` and let go of the mapping."""
        words = memoryview(buf).cast("d")
        for cell in self._cells.values():
            cell._buf = words
        old = self._mm
        self._mm, self._words, self._qwords = buf, words, memoryview(buf).cast("Q")
        if isinstance(old, mmap.mmap):
            with contextlib.suppress(BufferError):  # a write under way holds it: unmapped when released
                old.close()

    def __enter__(self) -> ProcessFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _after_fork(self) -> None:
        """In a forked child: a file of its own, holding the parent's table with every slot zeroed."""
        if self.closed:
            return
        parent_fd, used, last_created = self._fd, self._used, self._last_created
        table = bytearray(self._mm[:used])
        with contextlib.suppress(OSError):
            os.close(parent_fd)  # the child's copy only: never LOCK_UN, the parent shares this lock
        # Zero every entry of the table, cells or not (a thread of the parent may have been between appending
        # an entry and making its cell when the process forked).
        zeros = memoryview(table).cast("d")
        for kind, first, slots in walk_slots(table, HEADER_SIZE, used):
            zeros[first:first + slots] = array("d", initial_slots(kind, slots))
        zeros.release()
        try:
            self._create(self._capacity)
        except MultiprocessError as e:
            _log.warning("multi-process store: a forked process could not create its own file (%s); its "
                         "measurements are not shared", e)
            self.closed = True
            private = bytearray(self._capacity)
            private[:used] = table
            self._detach(private)
        else:
            self._mm[HEADER_SIZE:used] = table[HEADER_SIZE:used]
            self._used, self._last_created = used, last_created
            self._qwords[USED_WORD] = used
        words = self._words
        for cell in self._cells.values():
            cell._buf = words
            cell.reset()


def _after_fork_in_child() -> None:
    for process_file in list(_open_files):
        process_file._lock = threading.Lock()
        try:
            process_file._after_fork()
        except Exception:  # a fork hook must not raise
            _log.exception("multi-process store: switching files after a fork failed")


os.register_at_fork(after_in_child=_after_fork_in_child)
