"""Per-process text for multi-process mode: each process's own OpenTelemetry metrics (runtime, instrumentation
libraries, ``target_info``), rendered by that process with a ``pid`` label and written beside its cells file, and
their merge into one family per name for the host's single ``/metrics``.

The catalogue is merged from the processes' cells; what the SDK collects (process CPU, memory, threads, GC,
``application_info``) describes one process each, so each process's series keep their own ``pid`` label
instead of being summed.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

_log = logging.getLogger(__name__)
SUFFIX = ".prom"


def pid_label(pid: int | None = None) -> str:
    return f'pid="{os.getpid() if pid is None else pid}",'


def write(directory: str | os.PathLike[str], stem: str, text: str) -> None:
    """Replace ``<stem>.prom`` atomically, so a reader never sees half of it."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, Path(directory) / f"{stem}{SUFFIX}")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove(directory: str | os.PathLike[str], stem: str) -> None:
    (Path(directory) / f"{stem}{SUFFIX}").unlink(missing_ok=True)


def read(directory: str | os.PathLike[str], stems: Iterable[str]) -> list[str]:
    """The side texts of these processes (missing ones are skipped: a process may not have written yet)."""
    out = []
    for stem in stems:
        try:
            out.append((Path(directory) / f"{stem}{SUFFIX}").read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as exc:
            _log.warning("skipping the per-process metrics of %s: %s", stem, exc)
    return out


def merge(texts: Iterable[str], out: list[str], taken: set[str]) -> None:
    """Append the families of several processes' texts, one ``# HELP``/``# TYPE`` per name: the first text that
    has a family gives its header, the others add their series. Families whose names ``taken`` holds (the
    catalogue's) and families with another type than the first are left out."""
    families: dict[str, tuple[str, list[str]]] = {}
    order: list[str] = []
    for text in texts:
        name = kind = ""
        header: list[str] = []
        for line in text.splitlines():
            if line.startswith("# HELP "):
                name, kind, header = line.split(" ", 3)[2], "", [line]
            elif line.startswith("# TYPE "):
                kind = line.split(" ", 3)[3] if line.count(" ") >= 3 else ""
                header.append(line)
                entry = families.get(name)
                if entry is None and name not in taken:
                    families[name] = (kind, [*header])
                    order.append(name)
            elif line and name and not line.startswith("#"):
                entry = families.get(name)
                if entry is not None and entry[0] == kind:
                    entry[1].append(line)
    for name in order:
        lines = families[name][1]
        taken.add(name)
        out.append("\n".join(lines) + "\n")
