"""The newcomer path through the Makefile: what `make run` and `make test` install, `make deps` (the one list of
Debian packages, which `.ci/run` uses), and the skip summary `make test` ends with (tests/conftest.py).

`make -n -B` prints every command a target would run on a fresh machine without running any of them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parent.parent


def _make(*args: str) -> str:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    result = subprocess.run([make, "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_make_run_installs_the_service_set_only(tmp_path: Path) -> None:
    commands = _make("-n", "-B", "run", f"VENV={tmp_path / 'venv'}")
    installs = [line for line in commands.splitlines() if "pip install" in line]
    assert len(installs) == 1 and "-e '.[service]'" in installs[0], commands
    assert "-c constraints.txt" in installs[0]
    assert "--quiet" not in installs[0] and " -q " not in installs[0]  # pip shows each package it installs
    assert "[dev]" not in commands and "npm" not in commands
    assert commands.strip().splitlines()[-1].startswith(f"{tmp_path / 'venv'}/bin/python -m service")


def test_make_test_installs_the_development_and_npm_sets(tmp_path: Path) -> None:
    commands = _make("-n", "-B", "test", f"VENV={tmp_path / 'venv'}")
    assert "-e '.[dev]'" in commands
    for project in ("collector/typecheck", "tests/browser"):
        assert f"cd {project} && npm ci" in commands
    assert commands.index("ruff check") < commands.index("-m pytest")


def test_make_deps_installs_only_the_missing_debian_packages() -> None:
    out = _make("-s", "deps", "SUDO=echo", "DEBIAN_COMMANDS=sh:dash no-such-command-1:pkg-b no-such-command-2:pkg-a "
                "no-such-command-3:pkg-a")
    assert out.splitlines() == ["==> apt-get install pkg-a pkg-b", "apt-get update -qq",
                                "apt-get install -y -qq pkg-a pkg-b"]
    assert _make("-s", "deps", "SUDO=echo", "DEBIAN_COMMANDS=sh:dash").startswith("deps: all installed")


def test_the_debian_list_names_every_binary_the_tests_require_and_ci_uses_it() -> None:
    listed = _make("-s", "-p", "-n", "deps")
    commands_line = next(line for line in listed.splitlines() if line.startswith("DEBIAN_COMMANDS :="))
    provided = {pair.split(":")[0] for pair in commands_line.split(":=", 1)[1].split()}
    required = set()
    for test in ROOT.glob("tests/test_*.py"):
        required |= set(re.findall(r'require_binary\("([^"]+)"\)', test.read_text()))
    assert required <= provided, f"no Debian package for {required - provided}"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make deps" in ci and "apt-get" not in ci


def test_a_run_ends_with_the_skips_and_the_command_that_enables_them() -> None:
    """With only the virtualenv on PATH, the tests that need node and promtool skip; the summary groups them
    under `make deps`."""
    require_binary("node")  # the control: with it on PATH, the same tests run
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), "TELEMETRY_REQUIRE_SERVICES": "0"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests/test_collector_dashboards.py", "-k", "installed_versions or valid_promql"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "skipped tests and how to run them" in out, out
    assert "2 skipped; to run them: make deps" in out, out
    assert "1 x node is not installed (Debian package)" in out
    assert "1 x promtool is not installed (Debian package)" in out
