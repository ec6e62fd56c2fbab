"""``python -m telemetry``: the catalogue table/JSON, and ``simulate`` as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from telemetry.catalogue import CATALOGUE, documented, documented_names
from telemetry.cli import catalogue_json, catalogue_markdown, main
from telemetry.testing import WaitTimeout, parse_exposition, wait_for

from .conftest import free_port


def test_catalogue_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalogue"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == catalogue_markdown()
    rows = out.strip().splitlines()
    assert len(rows) == 2 + len(CATALOGUE)
    for name in documented_names():
        assert f"`{name}`" in out
    assert "| `tuist_runs_total` | counter | counter | `name`, `is_ci` (false/true), `status` (0/1) |" in out
    assert "(not in the doc)" in out


def test_catalogue_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalogue", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == json.loads(catalogue_json())
    assert [d["name"] for d in data] == [s.name for s in CATALOGUE]
    runs = data[0]
    assert runs["type"] == "counter" and runs["labels"] == ["name", "is_ci", "status"]
    assert runs["allowed"] == {"is_ci": ["false", "true"], "status": ["0", "1"]}
    assert sum(len(d["doc_names"]) for d in data) == 53


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as err:
        main(["nope"])
    assert err.value.code == 2


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("OTEL_METRICS_EXPORTER", "OTEL_SDK_DISABLED", "TUIST_METRICS_PORT", "TUIST_METRICS_HOST"):
        env.pop(key, None)
    return env


def test_simulate_serves_every_documented_name_then_stops_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "telemetry", "simulate", "--host", "127.0.0.1", "--port",
                             str(port), "--interval", "0.05", "--seed", "7"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == f"simulating; metrics at http://127.0.0.1:{port}/metrics"
        missing: list[str] = list(documented_names())

        def every_family_served() -> bool:
            nonlocal missing
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                served = {sample.name for sample in parse_exposition(response.read().decode())}
            # A histogram documented under its family name shows up as its _bucket/_sum/_count samples.
            missing = [s.name for s in documented() if not served & set(s.sample_names)]
            return not missing

        try:
            wait_for(every_family_served, 20, interval=0.3, what="samples for every documented family")
        except WaitTimeout:
            raise AssertionError(f"no samples for {missing}") from None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_simulate_port_in_use_exits_2_naming_the_port_and_setting() -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = subprocess.run([sys.executable, "-m", "telemetry", "simulate", "--host", "127.0.0.1", "--port",
                                 str(port), "--duration", "1"], capture_output=True, text=True, timeout=60,
                                env=_env())
    assert result.returncode == 2
    assert f"127.0.0.1:{port}" in result.stderr and "TUIST_METRICS_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_simulate_bad_setting_exits_2() -> None:
    env = _env() | {"TUIST_METRICS_PORT": "99999"}
    result = subprocess.run([sys.executable, "-m", "telemetry", "simulate", "--duration", "1"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2
    assert "TUIST_METRICS_PORT='99999' is not valid" in result.stderr


@pytest.mark.parametrize("argv", [["--help"], ["catalogue", "--help"], ["simulate", "--help"], ["serve", "--help"]])
def test_help_is_plain_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tuist-telemetry")
    for markup in ("``", ":func:", ":class:", ".. "):
        assert markup not in out, f"reST markup {markup!r} in {' '.join(argv)}:\n{out}"


def test_version_is_the_distribution_version(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.metadata

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"tuist-telemetry {importlib.metadata.version('tuist-telemetry')}"


def test_simulate_binds_loopback_only_by_default() -> None:
    """Without --host (and without TUIST_METRICS_HOST) only 127.0.0.1 answers, not 127.0.0.2 (another loopback
    address, which answers when the library's default 0.0.0.0 is bound)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "telemetry", "simulate", "--port", str(port), "--duration", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"simulating; metrics at http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert response.status == 200
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.2", port), timeout=2):
            pass
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_simulate_binds_the_host_it_is_given() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "telemetry", "simulate", "--host", "127.0.0.2", "--port",
                             str(port), "--duration", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"simulating; metrics at http://127.0.0.2:{port}/metrics"
        with socket.create_connection(("127.0.0.2", port), timeout=2):
            pass
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        proc.terminate()
        proc.wait(timeout=10)
