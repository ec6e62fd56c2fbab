"""A gunicorn config module for multi-process mode: ``gunicorn -c python:telemetry.gunicorn app:app``.

- ``when_ready`` (master): when ``TUIST_METRICS_MULTIPROCESS_DIR`` is unset, creates a fresh directory and exports
  it, so every worker gunicorn forks afterwards records into it; ``on_exit`` removes a directory it created.
- ``post_fork`` (each worker): ``telemetry.setup()`` from the environment. The worker records into its own file
  and listens on the metrics port (``TUIST_METRICS_HOST``/``TUIST_METRICS_PORT``) with SO_REUSEPORT beside
  the others; whichever answers a scrape serves every worker merged. An app that calls ``setup()`` itself gets
  this instance back (it is idempotent), so a plain WSGI app needs no telemetry code to be served.
- ``worker_exit`` (each worker): ``telemetry.shutdown()``, so its last gauge values land in its file. A worker
  that is killed loses nothing either: its file stays and is folded into the directory's archive.

In your own config, import the hooks you want: ``from telemetry.gunicorn import when_ready, worker_exit,
on_exit``; leave out ``post_fork`` when the app calls ``setup()`` with arguments (views, a registry) itself.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from telemetry.config import ENV, Settings

_created: str | None = None


def when_ready(server: Any) -> None:
    global _created
    if not Settings.from_env().multiprocess_dir:  # the workers it forks read the directory we export
        _created = tempfile.mkdtemp(prefix="tuist-metrics-")
        os.environ[ENV["multiprocess_dir"]] = _created


def post_fork(server: Any, worker: Any) -> None:
    import telemetry

    telemetry.setup()


def worker_exit(server: Any, worker: Any) -> None:
    import telemetry

    telemetry.shutdown()


def on_exit(server: Any) -> None:
    if _created is not None:
        shutil.rmtree(_created, ignore_errors=True)
