"""The multi-process store: per-series cells in per-process memory-mapped files, merged at scrape time.

For services that run several worker processes (gunicorn, uvicorn workers, multiprocessing), like
prometheus_client's multiprocess mode, with these differences: one file per process for every metric
(entries of a few dozen bytes, not one JSON key per sample); liveness from a lock each process holds on its
file, not from a ``mark_process_dead`` call; gauge modes per catalogue family; the registry's label-set limit
on the merged view; and dead processes' files folded into one archive so the directory stays small.

- ``ProcessFile(directory)``: this process's file; ``Registry(cells=process_file.cells)`` records into it
  (``process_file``).
- ``merged_streams(directory, registry)``: the merged view, as streams ``Renderer.streams`` renders
  (``merge``); ``compact(directory, registry)`` folds dead processes' files now (``compact``).
- ``GAUGE_MODES``: how each gauge merges (``modes``).

Modules: ``layout`` (the file format), ``cells`` (cells writing into a file), ``process_file``,
``directory`` (names, locks, liveness, reading files), ``fold`` (entries of many files into one stream's
series), ``merge``, ``compact``, ``modes``, ``errors``.
"""

from telemetry.multiprocess.compact import compact
from telemetry.multiprocess.errors import MultiprocessError
from telemetry.multiprocess.merge import MergedStream, Merger, merged_streams
from telemetry.multiprocess.modes import DEFAULT_GAUGE_MODE, GAUGE_MODES, GaugeMode, gauge_mode
from telemetry.multiprocess.process_file import ProcessFile

__all__ = [
    "DEFAULT_GAUGE_MODE",
    "GAUGE_MODES",
    "GaugeMode",
    "MergedStream",
    "Merger",
    "MultiprocessError",
    "ProcessFile",
    "compact",
    "gauge_mode",
    "merged_streams",
]
