"""Multi-process mode as each process runs it (``TUIST_METRICS_MULTIPROCESS_DIR``), and the host's one
``/metrics`` over the directory.

- Every process records the catalogue into its own memory-mapped file in the directory
  (``telemetry.multiprocess``): nothing returned from a record call is lost to a SIGKILL.
- Every few seconds (``TUIST_METRICS_MULTIPROCESS_REFRESH_SECONDS``) and on each scrape it answers, a process
  runs its gauge callbacks (pool and accounts gauges land in its file) and writes its own OpenTelemetry metrics
  (runtime, instrumentation libraries, ``target_info``) with a ``pid`` label beside its file
  (``exposition.sides``).
- Whichever process answers a scrape renders the merged view: the catalogue summed over every process, live
  and dead (gauges by their per-family mode), and the per-process metrics of the live ones. Several processes
  may listen on the metrics port at once (``SO_REUSEPORT``): each gives the same answer.
- ``serve_directory`` is the same view for a process that records nothing (``python -m telemetry serve``, a
  gunicorn master).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from telemetry.exposition import sides
from telemetry.exposition.render import Renderer
from telemetry.multiprocess import Merger, ProcessFile
from telemetry.multiprocess.directory import is_live
from telemetry.registry import Registry

_log = logging.getLogger(__name__)


def live_stems(directory: str) -> list[str]:
    """The process files of live processes that wrote per-process text; stale text of dead ones is removed."""
    out = []
    for side in sorted(Path(directory).glob(f"*{sides.SUFFIX}")):
        stem = side.name[: -len(sides.SUFFIX)]
        try:
            fd = os.open(Path(directory) / f"{stem}.db", os.O_RDONLY)
        except FileNotFoundError:
            side.unlink(missing_ok=True)
            continue
        try:
            live = is_live(fd)
        finally:
            os.close(fd)
        if live:
            out.append(stem)
        else:
            side.unlink(missing_ok=True)
    return out


class DirectoryView:
    """The merged exposition of a multi-process directory."""

    def __init__(self, directory: str, registry: Registry) -> None:
        self.directory = directory
        self.registry = registry
        self._merger = Merger(directory)
        self._renderer = Renderer()
        self._lock = threading.Lock()

    def render(self, own: tuple[str, str] | None = None) -> str:
        """The catalogue merged over every process, then each live process's own metrics. ``own`` is the
        calling process's (stem, text), fresher than what it last wrote."""
        with self._lock:
            out: list[str] = []
            taken: set[str] = set()
            self._renderer.streams(self._merger.streams(self.registry), out, taken)
            stems = [s for s in live_stems(self.directory) if own is None or s != own[0]]
            texts = ([own[1]] if own else []) + sides.read(self.directory, stems)
            sides.merge(texts, out, taken)
            return "".join(out)

    def close(self) -> None:
        self._merger.close()


class ProcessMode:
    """This process's part: its file, its refresher, and the merged view it serves."""

    def __init__(self, directory: str, registry: Registry, refresh_seconds: float) -> None:
        self.directory = os.path.abspath(directory)
        self.file = ProcessFile(self.directory)
        self.stem = Path(self.file.path).name.removesuffix(".db")
        self.view = DirectoryView(self.directory, registry)
        self._refresh_seconds = refresh_seconds
        self._own_text: Callable[[], str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, own_text: Callable[[], str]) -> None:
        """Refresh this process's gauges and per-process text now, and every ``refresh_seconds`` from now on."""
        self._own_text = own_text
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="telemetry-multiprocess", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._refresh_seconds):
            self.refresh()

    def refresh(self) -> str:
        """Write this process's own text (collecting it runs the gauge callbacks too) and return it."""
        if self._own_text is None:
            return ""
        try:
            text = self._own_text()
            sides.write(self.directory, self.stem, text)
            return text
        except Exception:
            _log.exception("refreshing this process's metrics in %s failed", self.directory)
            return ""

    def render(self) -> str:
        return self.view.render((self.stem, self.refresh()))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.refresh()  # the last gauge values land in the file
        sides.remove(self.directory, self.stem)  # this process's own series end with it
        self.view.close()
        with contextlib.suppress(Exception):
            self.file.close()
