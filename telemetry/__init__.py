"""Tuist's documented telemetry for Python services, built on OpenTelemetry.

    import telemetry
    t = telemetry.setup()                # /metrics on :9091
    t.recorders.runs.record("build", is_ci=True, status=0, duration_ms=812.0)

Importing this package starts nothing; ``setup()`` does, once. ``telemetry.__version__`` is the installed
distribution's version (``tuist-telemetry``).
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _distribution_version

from telemetry.catalogue import CATALOGUE, Kind, MetricSpec
from telemetry.config import Settings, SettingsError
from telemetry.exposition.server import ExpositionError
from telemetry.recorders import AccountCounts, Recorders
from telemetry.registry import Registry, default_registry
from telemetry.setup import Telemetry, current, setup, shutdown


def _source_version() -> str:
    """The version in pyproject.toml beside this package: a source checkout on sys.path that was never
    installed has no distribution metadata."""
    import tomllib
    from pathlib import Path

    try:
        with (Path(__file__).resolve().parent.parent / "pyproject.toml").open("rb") as f:
            return str(tomllib.load(f)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "0+unknown"


try:
    __version__ = _distribution_version("tuist-telemetry")
except _PackageNotFoundError:
    __version__ = _source_version()

__all__ = [
    "CATALOGUE",
    "AccountCounts",
    "ExpositionError",
    "Kind",
    "MetricSpec",
    "Recorders",
    "Registry",
    "Settings",
    "SettingsError",
    "Telemetry",
    "__version__",
    "current",
    "default_registry",
    "setup",
    "shutdown",
]
