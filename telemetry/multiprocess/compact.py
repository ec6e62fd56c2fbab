"""Compaction: dead processes' files folded into the directory's one archive and deleted, so the directory
does not grow without bound across restarts.

What the archive keeps: the counters and histograms of the old archive and of every dead process, folded
per stream as the merge folds them (the label-set limit applies: label sets beyond it go into the archived
overflow series), and the names of the files it folded (kind 4 entries). Dead processes' gauges are dropped
(the merged view counts only live processes' gauges), as are series of streams the registry does not have
(a View renamed between deployments) or of another shape, with a warning. A dead process's file that cannot
be read at all (no valid header) is deleted too, after its warning; what could be read of a damaged one is
folded.

Crash safety: the new archive is written to ``archive.db.tmp-<pid>``, fsynced, renamed over ``archive.db``
(and the directory fsynced); only then are the folded files deleted. A crash before the rename leaves the old
archive and the files (the temporary file is deleted by the next compaction); a crash after it leaves files
the new archive lists as folded, which the merge skips and the next compaction deletes. No state counts a
file twice, and the merged totals do not change across a compaction.

Concurrency: compaction runs under the directory lock held exclusively (``directory.exclusive``,
non-blocking): readers hold it shared, so two workers answering scrapes at once never fold the same files
twice, and a reader never sees a file deleted between listing the directory and reading the archive.
"""

from __future__ import annotations

import contextlib
import os
import time

from telemetry.catalogue import Kind
from telemetry.multiprocess.directory import (
    ARCHIVE,
    ARCHIVE_TMP,
    FileData,
    Reader,
    Snapshot,
    exclusive,
    warn_once,
)
from telemetry.multiprocess.fold import Shape, fold
from telemetry.multiprocess.layout import (
    ARCHIVE_FLAG,
    FOLDED,
    HEADER_SIZE,
    HISTOGRAM,
    OVERFLOW,
    encode_key,
    entry_size,
    write_entry,
    write_header,
)
from telemetry.registry import Registry


def compact(directory: str | os.PathLike[str], registry: Registry) -> bool:
    """Fold the dead processes' files of ``directory`` into its archive now, if no other process holds the
    directory; returns whether it did."""
    path = os.fspath(directory)
    with exclusive(path) as held:
        if not held:
            return False
        reader = Reader(path)
        snap = reader.snapshot()
        try:
            return compact_snapshot(path, snap, registry)
        finally:
            snap.release()
            reader.close()


def compact_snapshot(directory: str, snap: Snapshot, registry: Registry) -> bool:
    """Fold ``snap``'s dead files into a new archive and delete them (the caller holds the directory lock
    exclusively and took ``snap`` under it); returns False when the archive could not be written (logged;
    nothing is deleted then)."""
    dead = [f for f in snap.files if not f.live]
    for name in snap.temps:  # a compaction that crashed before its rename, a process before its file was ready
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, name))
    if dead:
        try:
            _write_archive(directory, snap, dead, registry)
        except OSError:
            return False
    for name in [*snap.stale, *(f.name for f in dead), *snap.unreadable]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))
    return True


def _write_archive(directory: str, snap: Snapshot, dead: list[FileData], registry: Registry) -> None:
    archive = snap.archive
    sources = ([archive] if archive is not None else []) + snap.files
    now = time.time_ns()
    entries: list[tuple[int, int, bytes, list[float]]] = []
    known = set()
    for stream in registry.streams():
        known.add(stream.name)
        if stream.kind is Kind.GAUGE:
            continue
        shape = Shape(stream)
        folded = fold(shape, sources, lambda source: not source.live)
        if shape.kind == HISTOGRAM:
            for labels, (counts, total, low, high) in folded.series.items():
                entries.append((HISTOGRAM, 0, encode_key(stream.name, labels),
                                [*counts, total, sum(counts), low, high]))
            if folded.overflow is not None:
                counts, total, low, high = folded.overflow
                entries.append((HISTOGRAM, OVERFLOW, encode_key(stream.name, ()),
                                [*counts, total, sum(counts), low, high]))
        else:
            for labels, value in folded.series.items():
                entries.append((shape.kind, 0, encode_key(stream.name, labels), [value]))
            if folded.overflow is not None:
                entries.append((shape.kind, OVERFLOW, encode_key(stream.name, ()), [folded.overflow]))
    for source in [*([archive] if archive is not None else []), *dead]:
        unknown = sorted(source.streams - known)
        if unknown:
            source.warn(f"series of streams this registry does not have are dropped by compaction: {unknown[:5]}")
    for name in [*snap.stale, *(f.name for f in dead)]:  # deleted after the rename; skipped until then
        entries.append((FOLDED, 0, encode_key(name, ()), []))

    size = HEADER_SIZE + sum(entry_size(key, len(slots)) for _, _, key, slots in entries)
    buf = bytearray(size)
    write_header(buf, used=size, pid=0, created=now, flags=ARCHIVE_FLAG)
    pos = HEADER_SIZE
    for kind, flags, key, slots in entries:
        write_entry(buf, pos, kind, flags, key, slots, now)
        pos += entry_size(key, len(slots))

    tmp = os.path.join(directory, f"{ARCHIVE_TMP}{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(buf)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, os.path.join(directory, ARCHIVE))
    except OSError as e:
        warn_once(tmp, f"cannot write the archive ({e}); dead processes' files stay until a later compaction")
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
