"""The file format of the multi-process store: a header and an append-only table of entries, each a key and
a fixed run of float64 slots. Both the per-process files and the directory's archive use it; this module
writes entries and reads (and validates) them, nothing else.

Layout, native byte order (a byte-order mark in the header rejects a foreign file), every offset a multiple of
8 so each slot is one aligned 8-byte word::

    header, 64 bytes
      0   8s  magic  b"TLMPROC1"
      8   Q   used   bytes of the file in use (header + complete entries); written last, as one 8-byte store
      16  d   1.0    byte-order mark
      24  Q   pid    of the process that made the file (0 for an archive)
      32  Q   created, time.time_ns()
      40  I   flags  1 = archive
      44  I   0, then 16 bytes of zeros
    entry, from offset 64, one after another up to ``used``
      0   I   CRC-32 of the entry's bytes 4 .. 24 + k (the rest of this header and the key)
      4   I   key length in bytes (k)
      8   H   slot count (n)
      10  B   kind: 1 counter, 2 gauge, 3 histogram, 4 folded file name (archives only; n = 0)
      11  B   flags: 1 = the stream's overflow series
      12  I   0
      16  Q   created, time.time_ns() when the series was first recorded (non-decreasing within a file)
      24  k   key: UTF-8 JSON ``[stream name, label value, ...]`` (``[file name]`` for kind 4), zero-padded
              to a multiple of 8
      ..  8n  slots, float64

Slots per kind: a counter ``[value]``; a gauge ``[value, time.time() of the last write (0: never)]``; a
histogram ``[bucket counts..., sum, count, min, max]`` (one count per bucket plus +Inf; min and max mean
something only when count > 0).

JSON keys cost a little space next to a binary encoding and decode in C: a reader decodes all of a file's
new keys with one ``json.loads``, and each entry once (entries are never rewritten, so readers cache them).
A counter series with three labels takes 80-104 bytes, a histogram with 17 buckets about 280
(prometheus_client's multiprocess files take about 190 and 6,700: a JSON key with the help text per sample).

The writer fills an entry beyond ``used`` and then advances ``used``, so a reader never sees a half-written
entry; slot writes are single aligned 8-byte stores (a memoryview cast to ``d``), never ``struct.pack_into``,
which zeroes its target before packing and would let a concurrent reader see a counter at 0.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

from telemetry.catalogue import Kind

MAGIC = b"TLMPROC1"
HEADER = struct.Struct("=8sQdQQII16x")
HEADER_SIZE = HEADER.size  # 64
USED_WORD = 1  # the header's ``used`` as the index of an 8-byte word
ENTRY = struct.Struct("=IIHBBIQ")
ENTRY_TAIL = struct.Struct("=IHBBIQ")  # what the CRC covers before the key
ENTRY_SIZE = ENTRY.size  # 24
ARCHIVE_FLAG = 1

COUNTER, GAUGE, HISTOGRAM, FOLDED = 1, 2, 3, 4
OVERFLOW = 1
KIND_CODES = {Kind.COUNTER: COUNTER, Kind.GAUGE: GAUGE, Kind.HISTOGRAM: HISTOGRAM}

_INF = math.inf


def slot_count(kind: int, buckets: int) -> int:
    """Slots of an entry: ``buckets`` is the number of bucket bounds of a histogram."""
    if kind == COUNTER:
        return 1
    if kind == GAUGE:
        return 2
    if kind == HISTOGRAM:
        return buckets + 5
    return 0


def padded(n: int) -> int:
    return (n + 7) & ~7


def encode_key(name: str, labels: Sequence[str]) -> bytes:
    return json.dumps([name, *labels], ensure_ascii=False, separators=(",", ":")).encode()


def entry_size(key: bytes, slots: int) -> int:
    return ENTRY_SIZE + padded(len(key)) + 8 * slots


def write_header(buf: Any, *, used: int, pid: int, created: int, flags: int = 0) -> None:
    HEADER.pack_into(buf, 0, MAGIC, used, 1.0, pid, created, flags, 0)


def write_entry(buf: Any, offset: int, kind: int, flags: int, key: bytes, slots: Sequence[float],
                created: int) -> int:
    """Write one entry at ``offset`` (beyond ``used``: nobody reads it yet); returns the index of its first
    slot as an 8-byte word."""
    n = len(slots)
    crc = zlib.crc32(key, zlib.crc32(ENTRY_TAIL.pack(len(key), n, kind, flags, 0, created)))
    ENTRY.pack_into(buf, offset, crc, len(key), n, kind, flags, 0, created)
    start = offset + ENTRY_SIZE
    end = start + padded(len(key))
    buf[start:start + len(key)] = key
    buf[start + len(key):end] = bytes(end - start - len(key))
    if n:
        struct.pack_into(f"={n}d", buf, end, *slots)
    return end // 8


def initial_slots(kind: int, slots: int) -> list[float]:
    """A new entry's slots: zeros, and a histogram's min/max at +Inf/-Inf."""
    values = [0.0] * slots
    if kind == HISTOGRAM:
        values[-2], values[-1] = _INF, -_INF
    return values


# An entry as a reader keeps it: (kind, flags, name, label values, first slot as a word index, slot count,
# created ns).
Entry = tuple[int, int, str, tuple[str, ...], int, int, int]


class Header:
    __slots__ = ("created", "flags", "pid", "used")

    def __init__(self, used: int, pid: int, created: int, flags: int) -> None:
        self.used = used
        self.pid = pid
        self.created = created
        self.flags = flags


def read_header(buf: Any, size: int) -> Header | str:
    """The header, or why it cannot be read."""
    if size < HEADER_SIZE:
        return f"{size} bytes, shorter than the {HEADER_SIZE}-byte header"
    magic, used, bom, pid, created, flags, _ = HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        return "not a multi-process store file (bad magic)"
    if bom != 1.0:
        return "written with another byte order"
    if used < HEADER_SIZE or used % 8:
        return f"invalid used size {used}"
    return Header(used, pid, created, flags)


def parse_entries(buf: Any, start: int, end: int) -> tuple[list[Entry], int, str | None]:
    """The entries in ``buf[start:end]``: (entries, the offset parsing stopped at, why it stopped early or
    None). Anything that does not check out (lengths, kind, slot count, CRC, key JSON) stops the parse there:
    past a corrupt length nothing can be trusted."""
    heads: list[tuple[int, int, int, int, int]] = []
    offsets: list[int] = []
    keys: list[memoryview] = []
    unpack, crc32 = ENTRY.unpack_from, zlib.crc32
    view = memoryview(buf)
    error = None
    pos = start
    try:
        while pos < end:
            if pos + ENTRY_SIZE > end:
                error = f"entry at {pos} cut short"
                break
            crc, klen, n, kind, flags, reserved, created = unpack(buf, pos)
            key_at = pos + ENTRY_SIZE
            slots = key_at + padded(klen)
            next_pos = slots + 8 * n
            if klen == 0 or next_pos > end:
                error = f"entry at {pos} cut short or with an invalid length"
                break
            if reserved or flags & ~OVERFLOW or not (COUNTER <= kind <= FOLDED):
                error = f"entry at {pos} has invalid kind or flags"
                break
            if (n != 1 if kind == COUNTER else n != 2 if kind == GAUGE else n < 6 if kind == HISTOGRAM
                    else n != 0):
                error = f"entry at {pos} has {n} slots for kind {kind}"
                break
            if crc32(view[pos + 4:key_at + klen]) != crc:
                error = f"entry at {pos} fails its checksum"
                break
            keys.append(view[key_at:key_at + klen])
            heads.append((kind, flags, slots // 8, n, created))
            offsets.append(pos)
            pos = next_pos
        decoded = _decode(keys)
    finally:
        for key in keys:
            key.release()
        view.release()
    good = len(decoded)
    if good < len(heads):
        error, pos = f"entry at {offsets[good]} has an unreadable key", offsets[good]
    # Every key a non-empty list of strings (checked in C over the whole batch; one by one only if not).
    if good and not (set(map(type, decoded)) == {list} and all(decoded)
                     and set(map(type, chain.from_iterable(decoded))) == {str}):
        for i, key in enumerate(decoded):
            if type(key) is not list or not key or not all(type(v) is str for v in key):
                good, error, pos = i, f"entry at {offsets[i]} has a key that is not a list of strings", offsets[i]
                break
    if not good:
        return [], pos, error
    kinds, flags_, firsts, counts, created_ = zip(*heads[:good], strict=True)
    decoded = decoded[:good]
    names = map(itemgetter(0), decoded)
    labels = map(tuple, map(itemgetter(slice(1, None)), decoded))
    return list(zip(kinds, flags_, names, labels, firsts, counts, created_, strict=True)), pos, error


def _decode(keys: list[memoryview]) -> list[Any]:
    """The keys decoded, all with one ``json.loads`` when they are all sound JSON (one per key); else one by
    one, up to the first that is not."""
    if not keys:
        return []
    try:
        decoded = json.loads(b"[" + b",".join(keys) + b"]")
        if type(decoded) is list and len(decoded) == len(keys):
            return decoded
    except ValueError:
        pass
    out = []
    for key in keys:
        try:
            out.append(json.loads(bytes(key)))
        except ValueError:  # also UnicodeDecodeError
            break
    return out


def walk_slots(buf: Any, start: int, end: int) -> list[tuple[int, int, int]]:
    """(kind, first slot word, slot count) of every entry of a table this process wrote itself (no
    validation, no key decoding: a forked child zeroing its copy of its parent's table)."""
    out = []
    unpack = ENTRY.unpack_from
    pos = start
    while pos + ENTRY_SIZE <= end:
        _, klen, n, kind, _, _, _ = unpack(buf, pos)
        first = pos + ENTRY_SIZE + padded(klen)
        out.append((kind, first // 8, n))
        pos = first + 8 * n
    return out
