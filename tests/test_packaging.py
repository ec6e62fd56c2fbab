"""The distribution: the wheel `pip wheel .` builds, its metadata, and that a resolver installs it beside the
newest OpenTelemetry SDK patch release in the package index.

- the wheel holds the ``telemetry`` package only (with ``py.typed``): no ``service/``, ``tests/`` or other
  top-level package;
- its runtime requirements are compatible ranges (a lower and an upper bound) that the exact development set in
  constraints.txt satisfies, and constraints.txt pins every package the extras name;
- ``telemetry.__version__`` is the distribution's version;
- in a throwaway virtualenv, pip resolves the wheel with every library extra and ``opentelemetry-sdk==<newest
  1.x patch>``, installs the core, and the installed package imports with its version (the package index must be
  reachable: it skips locally without it and fails in CI).
"""

from __future__ import annotations

import email.message
import email.parser
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import telemetry
from tests.conftest import require

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTION = "tuist-telemetry"
# The extras that are libraries for an application (service and dev are this repository's own sets).
LIBRARY_EXTRAS = ("httpx", "sqlalchemy", "asgi", "otlp", "posthog", "sentry", "remote-write")


def _pip(python: Path | str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def _source_tree(dest: Path) -> Path:
    """The repository's files (tracked, and new ones git does not ignore) copied to ``dest``: a build in the
    checkout itself would pick up whatever an earlier build left in build/."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = _source_tree(tmp_path_factory.mktemp("source"))
    result = _pip(sys.executable, "wheel", "--no-deps", "--wheel-dir", str(out), str(source))
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("*.whl")
    return built


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(z.read(name).decode())


def test_the_wheel_holds_the_telemetry_package_only(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    top = {n.split("/", 1)[0] for n in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {"telemetry"}, sorted(top)
    assert "telemetry/py.typed" in names
    assert "telemetry/__init__.py" in names and "telemetry/exposition/server.py" in names
    assert not [n for n in names if n.startswith(("service/", "tests/", "bench/", "collector/", "scripts/"))]


def test_metadata_ranges_version_and_classifiers(wheel: Path) -> None:
    meta = _metadata(wheel)
    assert meta["Name"] == DISTRIBUTION
    assert meta["Version"] == telemetry.__version__ == importlib.metadata.version(DISTRIBUTION)
    assert "Typing :: Typed" in meta.get_all("Classifier", [])
    assert {u.split(",")[0] for u in meta.get_all("Project-URL", [])} >= {"Homepage", "Source", "Issues"}
    requirements = [Requirement(r) for r in meta.get_all("Requires-Dist", [])]
    pins = _constraints()
    external = [r for r in requirements if r.name != DISTRIBUTION]
    assert any(r.name == "opentelemetry-sdk" and r.marker is None for r in external)
    for req in external:
        operators = {s.operator for s in req.specifier}
        assert ">=" in operators and "<" in operators, f"{req} is not a compatible range"
        assert "==" not in operators, f"{req} pins one release"
        name = _normal(req.name)
        assert name in pins, f"{req.name} has no exact version in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt's {req.name}=={pins[name]} is outside {req.specifier}")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not an exact pin"
            pins[_normal(name)] = version
    return pins


def test_version_falls_back_to_pyproject_in_a_source_checkout(tmp_path: Path) -> None:
    """A checkout that was never installed (only on sys.path) still has a version."""
    code = ("import importlib.metadata as m, sys\n"
            "def missing(name): raise m.PackageNotFoundError(name)\n"
            "m.version = missing\n"
            "import telemetry; print(telemetry.__version__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == telemetry.__version__


def _newest_sdk() -> str | None:
    """The newest opentelemetry-sdk 1.x release the configured index offers."""
    result = _pip(sys.executable, "index", "versions", "opentelemetry-sdk", timeout=120)
    found = re.search(r"Available versions: (.*)", result.stdout)
    if result.returncode != 0 or not found:
        return None
    versions = [Version(v.strip()) for v in found.group(1).split(",")]
    return str(max(v for v in versions if v.major == 1 and not v.is_prerelease))


@pytest.mark.slow
def test_a_resolver_installs_the_wheel_beside_the_newest_sdk_patch(wheel: Path, tmp_path: Path) -> None:
    newest = _newest_sdk()
    require(newest is not None, "the package index is not reachable (pip index versions opentelemetry-sdk)")
    assert newest is not None
    started = time.monotonic()
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    report = tmp_path / "report.json"
    extras = ",".join(LIBRARY_EXTRAS)
    resolved = _pip(python, "install", "--dry-run", "--ignore-installed", "--report", str(report),
                    f"{DISTRIBUTION}[{extras}] @ {wheel.as_uri()}", f"opentelemetry-sdk=={newest}")
    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    chosen = {item["metadata"]["name"].lower(): item["metadata"]["version"]
              for item in json.loads(report.read_text())["install"]}
    assert chosen["opentelemetry-sdk"] == newest
    assert chosen["opentelemetry-api"] == newest
    assert chosen[DISTRIBUTION] == telemetry.__version__
    assert {"httpx", "sqlalchemy", "posthog", "sentry-sdk", "opentelemetry-instrumentation-sqlalchemy"} <= set(chosen)
    assert not {"starlette", "uvicorn", "pytest", "ruff", "mypy"} & set(chosen), "dev or service tools resolved"

    installed = _pip(python, "install", str(wheel), f"opentelemetry-sdk=={newest}")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    probe = ("import importlib.util, pathlib, telemetry\n"
             "print(telemetry.__version__)\n"
             "print((pathlib.Path(telemetry.__file__).parent / 'py.typed').exists())\n"
             "print(importlib.util.find_spec('service') is None)\n")
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [telemetry.__version__, "True", "True"]
    print(f"resolved and installed in {time.monotonic() - started:.1f} s")
