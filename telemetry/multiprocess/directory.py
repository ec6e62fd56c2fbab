"""The multi-process directory: its file names, its lock, process liveness, and reading its files.

A directory holds one file per process (``<pid>-<created ns, 16 hex digits>.db``), at most one archive
(``archive.db``, what compaction folded from dead processes), the archive's temporary file while one is
written (``archive.db.tmp-<pid>``), a process file while it is created (``<name>.db.new``, published as
``<name>.db`` by a hard link once it is locked and has its header, so a reader never sees a file without
one) and ``directory.lock``.

Locks (``flock``, so local filesystems only, as prometheus_client's multiprocess mode):

- a process holds ``LOCK_EX`` on its own file for its lifetime; the kernel drops it when the process dies,
  however it dies. A reader tests liveness with a non-blocking ``LOCK_SH`` and releases it at once: shared,
  so two readers testing the same dead file at once both see it dead (an exclusive test would make the
  second reader see a dead file as live for a moment, and count its gauges);
- ``directory.lock``: readers take ``LOCK_SH`` while they list the directory and read its files, a process
  takes ``LOCK_SH`` while it creates its file (so no compaction runs meanwhile, and any ``.new`` file
  compaction finds is a creation that crashed), and compaction takes ``LOCK_EX`` (non-blocking: when another
  reader holds the directory, compaction waits for a later merge). So a reader never sees a dead file
  deleted under it, nor an archive without the files it folded.

Reading: a file is mapped read-only and its header and new entries are validated (``layout.parse_entries``);
its slots are read in place through a memoryview cast to ``d`` (aligned 8-byte loads: a value being written is
read whole, never torn; and no float object is made for a header or key word). Entries are cached per file,
since they never change once written; the mappings of dead processes' files and of the archive are kept
between snapshots, since those files do not change. What cannot be read is skipped and logged once per file.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain, repeat
from operator import add, itemgetter
from typing import Any

from telemetry.multiprocess.layout import ARCHIVE_FLAG, FOLDED, HEADER_SIZE, Entry, parse_entries, read_header

_log = logging.getLogger(__name__)

PROCESS_FILE = re.compile(r"(\d+)-([0-9a-f]{16})\.db")
ARCHIVE = "archive.db"
ARCHIVE_TMP = "archive.db.tmp-"
LOCK = "directory.lock"
NEW = ".new"  # a process file being created: published by a hard link once its header is written
_UNREADABLE = object()

_warned: set[str] = set()

# An entry of a stream: (label values, first slot as a word index, flags, created ns).
Fit = tuple[tuple[str, ...], int, int, int]


def warn_once(path: str, message: str) -> None:
    """Log a problem with ``path`` once (per process)."""
    if path in _warned:
        return
    if len(_warned) > 10_000:
        _warned.clear()
    _warned.add(path)
    _log.warning("multi-process store: %s: %s; what cannot be read is left out", path, message)


def process_file_name(pid: int, created_ns: int) -> str:
    return f"{pid}-{created_ns:016x}.db"


def is_live(fd: int) -> bool:
    """Whether the process owning the file holds its lock (a shared, non-blocking test)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def open_lock(directory: str) -> int:
    """The directory lock's descriptor (created if missing). Raises OSError."""
    return os.open(os.path.join(directory, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


@contextmanager
def shared(directory: str) -> Iterator[bool]:
    """Hold the directory lock shared; yields False (and holds nothing) when the lock file cannot be opened
    (a read-only directory): reading then goes on without it."""
    try:
        fd = open_lock(directory)
    except OSError as e:
        warn_once(os.path.join(directory, LOCK), f"cannot open the directory lock ({e})")
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield True
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def exclusive(directory: str) -> Iterator[bool]:
    """Try to hold the directory lock exclusively, without waiting: yields whether it is held."""
    try:
        fd = open_lock(directory)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


class Fits:
    """The entries of one stream shape in one file, parsed: ``entries`` as (label values, first slot, flags,
    created), ``labels`` each entry's label values, ``overflows`` how many are overflow series. Entries never
    change once written, so a file's ``Fits`` only grow."""

    __slots__ = ("_readers", "entries", "labels", "overflows")

    def __init__(self) -> None:
        self.entries: list[Fit] = []
        self.labels: list[tuple[str, ...]] = []
        self.overflows = 0
        self._readers: tuple[int, Any, Any, bool] | None = None

    def histogram_readers(self, buckets: int) -> tuple[Any, Any, bool]:
        """Two ``operator.itemgetter``s over a file's slot values: every entry's bucket counts, one after
        another, and every entry's (sum, min, max); and whether no two entries have the same labels. Made in C
        (``range``/``chain``), cached while no entry is added."""
        readers = self._readers
        if readers is None or readers[0] != len(self.entries):
            firsts = [first for _, first, _, _ in self.entries]
            counts = chain.from_iterable(map(range, firsts, map(add, firsts, repeat(buckets))))
            tails = chain.from_iterable(zip(map(add, firsts, repeat(buckets)), map(add, firsts, repeat(buckets + 2)),
                                            map(add, firsts, repeat(buckets + 3)), strict=True))
            # At least two indexes each (a histogram has two buckets or more): itemgetter returns tuples.
            readers = self._readers = (len(self.entries), itemgetter(*counts), itemgetter(*tails),
                                       len(set(self.labels)) == len(self.labels))
        return readers[1], readers[2], readers[3]


_NO_FITS = Fits()


class _Parsed:
    """One file's entries parsed so far, grouped by (stream name, kind, slot count, label count; -1 for an
    overflow series, which has no labels)."""

    __slots__ = ("combined", "error", "folded", "groups", "ino", "names", "pos")

    def __init__(self, ino: int, pos: int) -> None:
        self.ino = ino
        self.pos = pos
        self.groups: dict[tuple[str, int, int, int], Fits] = {}
        self.names: dict[str, int] = {}  # entries per stream name
        self.combined: dict[tuple[str, int, int, int], tuple[int, int, Fits]] = {}
        self.folded: list[str] = []
        self.error: str | None = None

    def add(self, entries: list[Entry]) -> None:
        groups, names = self.groups, self.names
        for kind, flags, name, labels, first, n, created in entries:
            if kind == FOLDED:
                self.folded.append(name)
                continue
            key = (name, kind, n, -1 if flags else len(labels))
            fits = groups.get(key)
            if fits is None:
                fits = groups[key] = Fits()
            fits.entries.append((labels, first, flags, created))
            fits.labels.append(labels)
            if flags:
                fits.overflows += 1
            names[name] = names.get(name, 0) + 1

    def fitting(self, name: str, kind: int, slots: int, labels: int) -> tuple[Fits, int]:
        key = (name, kind, slots, labels)
        fits = self.groups.get(key, _NO_FITS)
        overflow = self.groups.get((name, kind, slots, -1))
        if overflow is not None:  # the stream's series and its overflow series, as one
            done = self.combined.get(key)
            if done is None or done[:2] != (len(fits.entries), len(overflow.entries)):
                both = Fits()
                both.entries = fits.entries + overflow.entries
                both.labels = fits.labels + overflow.labels
                both.overflows = len(overflow.entries)
                done = self.combined[key] = (len(fits.entries), len(overflow.entries), both)
            fits = done[2]
        return fits, self.names.get(name, 0) - len(fits.entries)


class FileData:
    """What a reader read from one file: its parsed entries and its slots."""

    __slots__ = ("_mm", "_parsed", "archive", "cached", "live", "name", "order", "path", "values")

    def __init__(self, name: str, path: str, live: bool, archive: bool, parsed: _Parsed, values: Any,
                 mm: mmap.mmap | None = None) -> None:
        self.name = name
        self.path = path
        self.live = live
        self.archive = archive
        match = PROCESS_FILE.fullmatch(name)
        self.order = (int(match.group(2), 16), name) if match is not None else (-1, name)  # oldest first
        self.cached = False  # kept by the reader between snapshots (a dead file or the archive)
        self._parsed = parsed
        # The slots as float64 words: a memoryview of the file's read-only mapping (or any sequence of floats),
        # read in place, each word one aligned 8-byte load.
        self.values = values
        self._mm = mm

    @property
    def folded(self) -> tuple[str, ...]:
        """The files an archive folded."""
        return tuple(self._parsed.folded)

    @property
    def streams(self) -> set[str]:
        """The names of the streams the file has entries for."""
        return set(self._parsed.names)

    def warn(self, message: str) -> None:
        warn_once(self.path, message)

    def fitting(self, name: str, kind: int, slots: int, labels: int) -> tuple[Fits, int]:
        """The entries of stream ``name`` with this kind, slot count and label count (and its overflow
        series), and how many other entries the stream's name has (another shape: left out)."""
        return self._parsed.fitting(name, kind, slots, labels)

    def release(self) -> None:
        """Unmap the file."""
        if isinstance(self.values, memoryview):
            self.values.release()
        self.values = ()
        if self._mm is not None:
            with contextlib.suppress(BufferError):  # a view still in use: unmapped when it is freed
                self._mm.close()
            self._mm = None


class Snapshot:
    """The directory as one reader saw it under the shared lock."""

    __slots__ = ("archive", "files", "stale", "temps", "unreadable")

    def __init__(self) -> None:
        self.archive: FileData | None = None
        self.files: list[FileData] = []  # process files not folded, oldest first
        self.stale: list[str] = []  # process files the archive already folded (left by a crash)
        self.temps: list[str] = []  # archive and process temporary files (left by a crash)
        self.unreadable: list[str] = []  # dead processes' files with no readable header

    @property
    def dead(self) -> list[FileData]:
        return [f for f in self.files if not f.live]

    def release(self) -> None:
        """Unmap the files the reader does not keep (call when done with the snapshot's values)."""
        for data in [self.archive, *self.files]:
            if data is not None and not data.cached:
                data.release()


class Reader:
    """Reads one directory's files, caching what does not change."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._parsed: dict[str, _Parsed] = {}
        self._kept: dict[str, tuple[tuple[int, int, int], FileData | None]] = {}  # dead files, the archive

    def snapshot(self) -> Snapshot:
        """List and read the directory (the caller holds the directory lock, shared or exclusive)."""
        snap = Snapshot()
        directory = self.directory
        try:
            names = os.listdir(directory)
        except OSError as e:
            warn_once(directory, f"cannot list the directory ({e})")
            return snap
        seen = set(names)
        if ARCHIVE in seen:
            archive = self._read(ARCHIVE, archive=True)
            snap.archive = archive if isinstance(archive, FileData) else None
        folded = set(snap.archive.folded) if snap.archive is not None else set[str]()
        files = []
        for name in names:
            if PROCESS_FILE.fullmatch(name) is None:
                if name.startswith(ARCHIVE_TMP) or (name.endswith(NEW) and PROCESS_FILE.fullmatch(name[:-len(NEW)])):
                    snap.temps.append(name)
                continue
            if name in folded:
                snap.stale.append(name)
                continue
            data = self._read(name, archive=False)
            if isinstance(data, FileData):
                files.append(data)
            elif data is _UNREADABLE:
                snap.unreadable.append(name)
        files.sort(key=lambda f: f.order)
        snap.files = files
        for name in [n for n in self._parsed if n not in seen]:
            del self._parsed[name]
        for name in [n for n in self._kept if n not in seen]:
            self._evict(name)
        return snap

    def _evict(self, name: str) -> None:
        _, data = self._kept.pop(name)
        if data is not None:
            data.release()

    def close(self) -> None:
        """Unmap every file kept between snapshots."""
        for name in list(self._kept):
            self._evict(name)

    def _read(self, name: str, *, archive: bool) -> FileData | object | None:
        """The file's data; ``_UNREADABLE`` for a dead process's file that cannot be read at all; None for a file
        that vanished or a live one that cannot be read."""
        path = os.path.join(self.directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            warn_once(path, f"cannot open ({e})")
            return None
        try:
            st = os.fstat(fd)
            live = False if archive else is_live(fd)
            if live:
                return self._map(fd, name, path, st.st_ino, st.st_size, live, archive)
            # A dead process's file, or the archive: it does not change any more (an archive is replaced by a
            # new file, never rewritten), so its mapping is kept while its inode, size and mtime stay.
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            kept = self._kept.get(name)
            if kept is not None:
                if kept[0] == stamp:
                    return _UNREADABLE if kept[1] is None and not archive else kept[1]
                self._evict(name)
            mapped = self._map(fd, name, path, st.st_ino, st.st_size, live, archive)
            if mapped is not None:
                mapped.cached = True
            self._kept[name] = (stamp, mapped)
            return _UNREADABLE if mapped is None and not archive else mapped
        finally:
            os.close(fd)

    def _map(self, fd: int, name: str, path: str, ino: int, size: int, live: bool,
             archive: bool) -> FileData | None:
        if size < 8:
            warn_once(path, f"{size} bytes, no header")
            return None
        try:
            mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            warn_once(path, f"cannot map ({e})")
            return None
        try:
            parsed = self._parse(mm, name, path, ino, size, archive)
            values = None if parsed is None else memoryview(mm)[:parsed.pos].cast("d")
        except BaseException:
            mm.close()
            raise
        if parsed is None or values is None:
            mm.close()
            return None
        return FileData(name, path, live, archive, parsed, values, mm)

    def _parse(self, mm: mmap.mmap, name: str, path: str, ino: int, size: int, archive: bool) -> _Parsed | None:
        """The file's entries, parsed up to its ``used`` (only the new ones since the last read)."""
        header = read_header(mm, size)
        if isinstance(header, str):
            warn_once(path, header)
            return None
        if bool(header.flags & ARCHIVE_FLAG) != archive:
            warn_once(path, "an archive under a process file's name, or the reverse")
            return None
        end = header.used
        if end > size:
            warn_once(path, f"truncated: {size} bytes of {end} in use")
            end = size - size % 8
        parsed = self._parsed.get(name)
        if parsed is None or parsed.ino != ino or parsed.pos > end:
            parsed = self._parsed[name] = _Parsed(ino, HEADER_SIZE)
        if parsed.pos < end and parsed.error is None:
            entries, parsed.pos, parsed.error = parse_entries(mm, parsed.pos, end)
            if parsed.error is not None:
                warn_once(path, parsed.error)
            parsed.add(entries)
        return parsed
