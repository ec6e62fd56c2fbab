"""The import surface: what ``import telemetry`` offers is pinned, every ``__all__`` names something that exists,
importing a public module starts nothing, and no code of the package or the reference service reaches into
another module's private names (tests may: they are white-box)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import telemetry

ROOT = Path(__file__).resolve().parent.parent
# Modules that import an optional dependency at import time (an extra).
OPTIONAL = {"telemetry.remote_write": "opentelemetry.exporter.prometheus_remote_write",
            "telemetry.pytest_plugin": "pytest"}

PUBLIC_API = {
    "CATALOGUE", "AccountCounts", "ExpositionError", "Kind", "MetricSpec", "Recorders", "Registry", "Settings",
    "SettingsError", "Telemetry", "current", "default_registry", "setup", "shutdown",
}


def modules() -> list[str]:
    """Every module of the package but ``__main__`` (importing it runs the command line)."""
    return sorted(m.name for m in pkgutil.walk_packages(telemetry.__path__, "telemetry.")
                  if m.name != "telemetry.__main__")


def test_the_top_level_api_is_what_the_readme_documents() -> None:
    assert set(telemetry.__all__) == PUBLIC_API | {"__version__"}
    public = {n for n in vars(telemetry) if not n.startswith("_") and not isinstance(getattr(telemetry, n),
                                                                                       type(telemetry))}
    assert public == PUBLIC_API, "a name is reachable from `telemetry` without being in __all__"


@pytest.mark.parametrize("name", modules())
def test_every_module_imports_and_its_all_exists(name: str) -> None:
    if name in OPTIONAL:
        pytest.importorskip(OPTIONAL[name])
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no module docstring"
    missing = [n for n in getattr(module, "__all__", ()) if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"


def test_importing_every_public_module_starts_no_thread_and_opens_no_port() -> None:
    code = ("import threading, pkgutil, importlib, telemetry\n"
            f"skip = {sorted(OPTIONAL)!r}\n"
            "for m in pkgutil.walk_packages(telemetry.__path__, 'telemetry.'):\n"
            "    if m.name not in skip and not m.name.split('.')[-1].startswith('_'):\n"
            "        importlib.import_module(m.name)\n"
            "print(threading.active_count())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "1", out.stdout + out.stderr


# The one module that may use OpenTelemetry's private names; tests/test_sdk_coupling.py pins each of them.
SDK_COUPLING = ROOT / "telemetry" / "_sdk.py"


def private_imports(path: Path) -> list[str]:
    """``from m import _name`` of a private name that is not a module, and any import of a ``telemetry`` private
    module from outside the ``telemetry`` package."""
    if path == SDK_COUPLING:
        return []
    found = []
    inside = path.is_relative_to(ROOT / "telemetry")
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                if not alias.name.startswith("_") or alias.name == "__version__":
                    continue
                if importlib.util.find_spec(node.module) and _is_module(target):
                    if not inside:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports private module {target}")
                else:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {alias.name} from {node.module}")
        elif isinstance(node, ast.Import) and not inside:
            found.extend(f"{path.relative_to(ROOT)}:{node.lineno} imports private module {a.name}"
                         for a in node.names if a.name.startswith("telemetry.") and "._" in a.name)
    return found


def _is_module(dotted: str) -> bool:
    try:
        return importlib.util.find_spec(dotted) is not None
    except (ImportError, ValueError):
        return False


def test_no_private_name_is_imported_from_another_module() -> None:
    files = [p for d in ("telemetry", "service", "bench", "collector", "scripts") for p in (ROOT / d).rglob("*.py")
             if "node_modules" not in p.parts]
    found = [line for p in files for line in private_imports(p)]
    assert not found, "\n".join(found)
