"""How the entries of many files become one stream's series: sums, gauge modes, the label-set limit and its
overflow series. Pure functions over what ``directory.Reader`` read; the merge and compaction both use them.

Which files count: counters and histograms are summed over every file, the archive, live and dead
processes; gauges over live processes only, by their mode (``modes``). A histogram's count is the sum of its
bucket counts (so the ``+Inf`` bucket and ``_count`` always agree, even when a reader catches a write between
two slots), its min and max the min and max over the files with observations.

The limit: a merged stream keeps at most ``limit`` label sets (the registry's limit for the stream). When
more exist across the files, the admitted ones are the archive's (in archive order), then the others by the
time each was first recorded (the entry's ``created``, then file and entry order); the rest are added into
the merged overflow series, with every process's own overflow series. Entries are append-only and keep their
time, and compaction moves only admitted label sets into the archive, so a label set once admitted stays
admitted: existing series keep their labels (a wall-clock step backwards while a stream is over its limit is
the one exception).

What is read is validated, not trusted: a counter must be finite and >= 0, a gauge finite, a histogram's
bucket counts whole numbers >= 0 with a finite sum >= 0. An entry that fails is left out and the file logged
once; an entry of another shape (a stream whose buckets or labels changed between deployments) too. A gauge
entry with no write time was never set (its process made the series, then a ``set`` failed or none came): it
is left out quietly, as the process's own in-memory view leaves it out.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from typing import Any

from telemetry.multiprocess.directory import FileData, Fit, Fits
from telemetry.multiprocess.layout import GAUGE, HISTOGRAM, KIND_CODES, slot_count
from telemetry.multiprocess.modes import GaugeMode, gauge_mode
from telemetry.store import Stream

_INF = float("inf")
_MAX_COUNT = float(2**53)

# A histogram while folding: (bucket counts (ints), sum, min, max).
HistogramRaw = tuple[list[int], float, float, float]


class Shape:
    """What one stream's entries must look like, and how they fold."""

    __slots__ = ("buckets", "kind", "labels", "limit", "mode", "name", "slots")

    def __init__(self, stream: Stream) -> None:
        self.name = stream.name
        self.kind = KIND_CODES[stream.kind]
        self.labels = len(stream.label_names)
        self.buckets = len(stream.buckets) + 1
        self.slots = slot_count(self.kind, len(stream.buckets))
        self.limit = stream.limit
        self.mode = gauge_mode(stream.spec.name) if self.kind == GAUGE else None


class Folded:
    """A stream's series in first-seen order (label values -> value, ``(time, value)`` for a latest-write
    gauge, ``HistogramRaw`` for a histogram) and its overflow series (None when there is none)."""

    __slots__ = ("overflow", "series")

    def __init__(self, series: dict[tuple[str, ...], Any], overflow: Any) -> None:
        self.series = series
        self.overflow = overflow


def fold(shape: Shape, sources: Sequence[FileData],
         counted: Callable[[FileData], bool] | None = None) -> Folded:
    """Fold one stream over ``sources`` (the archive first, then process files oldest first). All of them
    decide which label sets are admitted; only those ``counted`` accepts (all by default) add values."""
    name, kind, slots, labels = shape.name, shape.kind, shape.slots, shape.labels
    groups: list[tuple[FileData, Fits]] = []
    for source in sources:
        if kind == GAUGE and not source.live:
            continue
        fits, odd = source.fitting(name, kind, slots, labels)
        if odd:
            source.warn(f"{odd} series of {name} do not match this registry's stream (kind, labels or buckets)")
        if fits.entries:
            groups.append((source, fits))
    admitted = None
    if sum(len(fits.entries) for _, fits in groups) > shape.limit:
        admitted = _admit(shape, groups)
    if counted is not None:
        groups = [(s, f) for s, f in groups if counted(s)]
    if kind == HISTOGRAM:
        return _fold_histograms(shape, groups, admitted)
    if kind == GAUGE and shape.mode is GaugeMode.LIVE_LATEST:
        return _fold_latest(shape, groups, admitted)
    return _fold_sums(shape, groups, admitted)


def _admit(shape: Shape, groups: list[tuple[FileData, Fits]]) -> set[tuple[str, ...]] | None:
    """The admitted label sets when more than ``limit`` exist (None: all are)."""
    first: dict[tuple[str, ...], tuple[int, int, int]] = {}
    for rank, (source, fits) in enumerate(groups):
        archive = source.archive
        for pos, (labels, _, flags, created) in enumerate(fits.entries):
            if flags:
                continue
            key = (-1 if archive else created, rank, pos)
            current = first.get(labels)
            if current is None or key < current:
                first[labels] = key
    if len(first) <= shape.limit:
        return None
    return set(sorted(first, key=first.__getitem__)[:shape.limit])


def _fold_sums(shape: Shape, groups: list[tuple[FileData, Fits]],
               admitted: set[tuple[str, ...]] | None) -> Folded:
    """Counters (finite, >= 0) and sum-mode gauges (finite): values added."""
    series: dict[tuple[str, ...], float] = {}
    overflow: float | None = None
    gauge = shape.kind == GAUGE
    for source, fits in groups:
        values = source.values
        bad = 0
        for labels, first, flags, _ in fits.entries:
            value = values[first]
            if gauge:
                if not (-_INF < value < _INF and 0 <= values[first + 1] < _INF):
                    bad += 1
                    continue
                if not values[first + 1]:  # never written (no write time): not exposed, as in memory
                    continue
            elif not 0 <= value < _INF:
                bad += 1
                continue
            if flags or (admitted is not None and labels not in admitted):
                overflow = value if overflow is None else overflow + value
            else:
                current = series.get(labels)
                series[labels] = value if current is None else current + value
        if bad:
            source.warn(f"{bad} series of {shape.name} hold invalid numbers")
    return Folded(series, overflow)


def _fold_latest(shape: Shape, groups: list[tuple[FileData, Fits]],
                 admitted: set[tuple[str, ...]] | None) -> Folded:
    """Latest-write gauges: the value with the latest write time (a later file wins a tie)."""
    series: dict[tuple[str, ...], tuple[float, float]] = {}
    overflow: tuple[float, float] | None = None
    for source, fits in groups:
        values = source.values
        bad = 0
        for labels, first, flags, _ in fits.entries:
            value, written = values[first], values[first + 1]
            if not (-_INF < value < _INF and 0 <= written < _INF):
                bad += 1
                continue
            if not written:  # never written: not exposed, as a gauge series in memory is not
                continue
            point = (written, value)
            if flags or (admitted is not None and labels not in admitted):
                if overflow is None or written >= overflow[0]:
                    overflow = point
            else:
                current = series.get(labels)
                if current is None or written >= current[0]:
                    series[labels] = point
        if bad:
            source.warn(f"{bad} series of {shape.name} hold invalid numbers")
    return Folded(series, overflow)


def _fold_histograms(shape: Shape, groups: list[tuple[FileData, Fits]],
                     admitted: set[tuple[str, ...]] | None) -> Folded:
    series: dict[tuple[str, ...], HistogramRaw] = {}
    overflow: HistogramRaw | None = None
    nb = shape.buckets
    for source, fits in groups:
        entries = fits.entries
        get_counts, get_tails, distinct = fits.histogram_readers(nb)
        checked = _read_histograms(source.values, get_counts, get_tails)
        if checked is None:  # something in the file is off: find out which entries, one by one
            checked = _check_histograms(source, shape, entries)
        ints, tails, ok = checked
        if (ok is None and admitted is None and not fits.overflows and distinct
                and series.keys().isdisjoint(fits.labels)):
            # The common case, in C: the file's series are all good, within the limit and new to the merge.
            chunks = [ints[k:k + nb] for k in range(0, len(ints), nb)]
            raws = zip(chunks, tails[0::3], tails[1::3], tails[2::3], strict=True)
            series.update(zip(fits.labels, raws, strict=True))
            continue
        k = t = 0
        for i, (labels, _, flags, _) in enumerate(entries):
            counts = ints[k:k + nb]
            k += nb
            hsum, low, high = tails[t], tails[t + 1], tails[t + 2]
            t += 3
            if ok is not None and not ok[i]:
                continue
            if flags or (admitted is not None and labels not in admitted):
                overflow = (counts, hsum, low, high) if overflow is None else _add(overflow, counts, hsum, low, high)
            else:
                current = series.get(labels)
                series[labels] = ((counts, hsum, low, high) if current is None
                                  else _add(current, counts, hsum, low, high))
    return Folded(series, overflow)


_trunc = float.__trunc__
# Bucket counts of every entry (one flat list), (sum, min, max) of every entry, which entries passed (None: all).
Checked = tuple[list[int], Any, list[bool] | None]


def _read_histograms(values: Any, get_counts: Any, get_tails: Any) -> Checked | None:
    """Every entry's bucket counts (as ints, one flat list) and (sum, min, max) triples, checked in bulk: counts
    whole numbers >= 0 below 2**53 (a float count stops growing there, and garbage read as doubles almost
    never passes), sums finite and >= 0. None when a check fails."""
    counts = get_counts(values)
    total = sum(counts)
    if not 0 <= total < _MAX_COUNT:
        return None
    ints = list(map(_trunc, counts))
    try:
        array("Q", ints)  # no count below zero (faster than min())
    except OverflowError:
        return None
    if sum(ints) != total:  # with none below zero: trunc(c) == c for every c exactly when each is whole
        return None
    tails = get_tails(values)
    sums = tails[0::3]
    if not 0 <= sum(sums) < _INF or min(sums) < 0:
        return None
    return ints, tails, None


def _check_histograms(source: FileData, shape: Shape, entries: list[Fit]) -> Checked:
    """``_read_histograms`` entry by entry, keeping the entries that pass."""
    values, nb = source.values, shape.buckets
    ints: list[int] = []
    tails: list[float] = []
    ok: list[bool] = []
    for _, first, _, _ in entries:
        end = first + nb
        counts = values[first:end]
        total = sum(counts)
        hsum = values[end]
        good = 0 <= total < _MAX_COUNT and min(counts) >= 0 and 0 <= hsum < _INF
        whole = list(map(_trunc, counts)) if good else [0] * nb
        good = good and sum(whole) == total
        ints.extend(whole)
        tails.extend((hsum, values[end + 2], values[end + 3]))
        ok.append(good)
    bad = ok.count(False)
    if bad:
        source.warn(f"{bad} series of {shape.name} hold invalid numbers")
    return ints, tails, ok


def _add(into: HistogramRaw, counts: list[int], total: float, low: float, high: float) -> HistogramRaw:
    a_counts, a_total, a_low, a_high = into
    return ([a + b for a, b in zip(a_counts, counts, strict=True)], a_total + total,
            low if low < a_low else a_low, high if high > a_high else a_high)
