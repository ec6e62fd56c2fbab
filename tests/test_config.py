"""Settings: argument > environment variable > default, and bad values fail at startup naming the variable."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from service.settings import ENV as SERVICE_ENV
from telemetry.config import ENV, FIELDS, Settings, SettingsError, markdown_table, redact
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_without_environment() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert (s.metrics_host, s.metrics_port, s.metrics_path) == ("0.0.0.0", 9091, "/metrics")
    assert s.cardinality_limit == 2000 and s.target_info and not s.scope_labels and s.runtime_metrics
    assert not s.sdk_disabled


def test_every_field_has_one_env_var_and_a_settings_attribute() -> None:
    attrs = {f.attr for f in FIELDS}
    envs = [f.env for f in FIELDS]
    assert len(envs) == len(set(envs)) == len(FIELDS)
    assert attrs == {f.name for f in dataclasses.fields(Settings)}
    assert dict(ENV) == {f.attr: f.env for f in FIELDS}
    for f in FIELDS:
        assert f.env.startswith(("TUIST_", "OTEL_")), f.env
        assert f.help.endswith((".", ")")), f.env


def test_environment_values_are_parsed() -> None:
    env = {ENV["metrics_port"]: "9200", ENV["metrics_host"]: "127.0.0.1", ENV["metrics_path"]: "/prom",
           ENV["target_info"]: "false", ENV["scope_labels"]: "YES", ENV["cardinality_limit"]: "50",
           ENV["cardinality_limits"]: "tuist_runs_total=10, tuist_http_request_count=7",
           ENV["gauge_refresh_seconds"]: "2.5", ENV["sdk_disabled"]: "1", ENV["service_name"]: "api"}
    s = Settings.from_env(env)
    assert s.metrics_port == 9200 and s.metrics_host == "127.0.0.1" and s.metrics_path == "/prom"
    assert s.target_info is False and s.scope_labels is True and s.sdk_disabled is True
    assert s.cardinality_limit == 50
    assert dict(s.cardinality_limits) == {"tuist_runs_total": 10, "tuist_http_request_count": 7}
    assert s.gauge_refresh_seconds == 2.5 and s.service_name == "api"


def test_arguments_win_over_environment() -> None:
    env = {ENV["metrics_port"]: "9200", ENV["service_name"]: "from-env"}
    s = Settings.from_env(env, metrics_port=0, service_name="from-arg")
    assert s.metrics_port == 0 and s.service_name == "from-arg"
    assert Settings.from_env(env).metrics_port == 9200


def test_process_environment_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV["metrics_port"], "9333")
    assert Settings.from_env().metrics_port == 9333


@pytest.mark.parametrize(("attr", "raw", "why"), [
    ("metrics_port", "http", "invalid literal"),
    ("metrics_port", "70000", "port number from 0 to 65535"),
    ("metrics_port", "-1", "port number"),
    ("metrics_path", "metrics", "starting with /"),
    ("metrics_basic_auth", "justuser", "user:password"),
    ("cardinality_limit", "0", "at least 1"),
    ("cardinality_limits", "tuist_runs_total", "expected name=N"),
    ("cardinality_limits", "tuist_runs_total=0", "at least 1"),
    ("cardinality_limits", "tuist_not_a_metric=3", "not in the catalogue"),
    ("target_info", "maybe", "true or false"),
    ("gauge_refresh_seconds", "0", "above 0"),
    ("gauge_refresh_seconds", "soon", "could not convert"),
    ("drop_labels", "object_key,objectkey", "['objectkey'] is not a label of any catalogue metric"),
    ("drop_labels", "object_key,,upload_id", "without empty entries"),
    ("drop_labels", "tuist_runs_total", "not a label of any catalogue metric"),
    ("posthog_url", "127.0.0.1:23204", "expected an http:// or https:// URL"),
    ("posthog_url", "http://127.0.0.1:99999", "the port 99999 is not a port number from 0 to 65535"),
    ("posthog_url", "https://", "expected a host"),
    ("posthog_script_url", "ftp://127.0.0.1/array.js", "expected an http:// or https:// URL"),
])
def test_bad_environment_values_name_the_variable(attr: str, raw: str, why: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({ENV[attr]: raw})
    message = str(err.value)
    shown = "'***'" if next(f for f in FIELDS if f.attr == attr).secret else repr(raw)  # secrets never shown
    assert message.startswith(f"{ENV[attr]}={shown} is not valid")
    assert why in message


def test_bad_arguments_name_the_setting_and_its_variable() -> None:
    with pytest.raises(SettingsError, match=r"metrics_path \(env TUIST_METRICS_PATH\) = 'x' is not valid"):
        Settings.from_env({}, metrics_path="x")
    with pytest.raises(SettingsError, match=r"metrics_port \(env TUIST_METRICS_PORT\)"):
        Settings.from_env({}, metrics_port=65536)
    with pytest.raises(TypeError, match=r"unknown settings \['metrics_prot'\]"):
        Settings.from_env({}, metrics_prot=1)


def test_bearer_and_basic_auth_are_exclusive() -> None:
    env = {ENV["metrics_bearer_token"]: "t", ENV["metrics_basic_auth"]: "u:p"}
    with pytest.raises(SettingsError, match="TUIST_METRICS_BEARER_TOKEN or TUIST_METRICS_BASIC_AUTH"):
        Settings.from_env(env)


def test_secrets_are_not_in_repr() -> None:
    s = Settings.from_env({ENV["metrics_bearer_token"]: "s3cret-token"})
    assert "s3cret-token" not in repr(s)
    assert s.metrics_bearer_token == "s3cret-token"


def test_replace_validates_and_keeps_the_original() -> None:
    s = Settings()
    t = s.replace(metrics_port=1234)
    assert (s.metrics_port, t.metrics_port) == (9091, 1234)
    with pytest.raises(SettingsError):
        s.replace(metrics_path="nope")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.metrics_port = 1  # type: ignore[misc]


def test_markdown_table_lists_every_variable_with_its_default() -> None:
    table = markdown_table()
    lines = table.splitlines()
    assert lines[0] == "| Variable | Default | Meaning |"
    assert len(lines) == 2 + len(FIELDS)
    for f in FIELDS:
        assert sum(line.startswith(f"| `{f.env}` |") for line in lines) == 1
    assert "| `TUIST_METRICS_PORT` | `9091` |" in table
    assert "| `TUIST_METRICS_TARGET_INFO` | `true` |" in table


@pytest.mark.parametrize(("attr", "value", "why"), [
    ("cardinality_limit", 0, "at least 1"),
    ("cardinality_limit", True, "invalid literal"),
    ("cardinality_limit", 2.5, "invalid literal"),
    ("gauge_refresh_seconds", -1.0, "above 0"),
    ("target_info", "maybe", "true or false"),
    ("drop_labels", "le", "not a label of any catalogue metric"),
])
def test_arguments_are_checked_like_environment_values(attr: str, value: object, why: str) -> None:
    with pytest.raises(SettingsError, match=rf"{attr} \(env {ENV[attr]}\) = .* is not valid: .*{why}"):
        Settings.from_env({}, **{attr: value})


def test_text_arguments_are_parsed_like_environment_values() -> None:
    s = Settings.from_env({}, target_info="false", metrics_port="9200", cardinality_limits="tuist_runs_total=3",
                          gauge_refresh_seconds="1.5")
    assert s.target_info is False, "the string 'false' must not be truthy"
    assert s.metrics_port == 9200 and dict(s.cardinality_limits) == {"tuist_runs_total": 3}
    assert s.gauge_refresh_seconds == 1.5
    assert Settings().replace(scope_labels="yes").scope_labels is True


def test_drop_labels_default_to_none_and_accept_catalogue_label_names() -> None:
    from telemetry.catalogue import CATALOGUE

    assert Settings.from_env({}).drop_labels == ""
    labels = sorted({n for s in CATALOGUE for n in s.labels})
    raw = " , ".join(labels)
    assert Settings.from_env({ENV["drop_labels"]: raw}).drop_labels == raw
    assert Settings.from_env({ENV["drop_labels"]: ""}).drop_labels == ""


@pytest.mark.parametrize(("raw", "shown"), [
    ("postgresql://qa:S3cretPw@127.0.0.1:5432/test", "postgresql://qa:***@127.0.0.1:5432/test"),
    ("http://ph:S3cret@127.0.0.1:8000/", "http://ph:***@127.0.0.1:8000/"),
    ("redis://:S3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("postgresql://qa:p@ss@127.0.0.1/test", "postgresql://qa:***@127.0.0.1/test"),
    ("cannot use postgresql://qa:S3cretPw@127.0.0.1/db: refused",
     "cannot use postgresql://qa:***@127.0.0.1/db: refused"),
    ("postgresql://qa@127.0.0.1/test", "postgresql://qa@127.0.0.1/test"),
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ("not a url: a:b@c", "not a url: a:b@c"),
])
def test_redact_hides_url_passwords(raw: str, shown: str) -> None:
    assert redact(raw) == shown


def test_settings_repr_redacts_secrets_and_url_passwords() -> None:
    from service.settings import ServiceSettings

    s = Settings.from_env({ENV["posthog_url"]: "https://ph:S3cretPw@127.0.0.1:8000",
                           ENV["posthog_api_key"]: "phc_S3cret", ENV["metrics_basic_auth"]: "u:S3cretPw"})
    service = ServiceSettings.from_env({SERVICE_ENV["database_url"]: "postgresql://qa:S3cretPw@127.0.0.1/test",
                                        SERVICE_ENV["sentry_dsn"]: "https://S3cret@127.0.0.1/1"})
    for text in (repr(s), repr(service), str(s)):
        assert "S3cret" not in text, text
    assert "posthog_url='https://ph:***@127.0.0.1:8000'" in repr(s) and "posthog_api_key='***'" in repr(s)
    assert "database_url='postgresql://qa:***@127.0.0.1/test'" in repr(service)
    assert [f.env for f in FIELDS if f.secret] == [ENV["metrics_bearer_token"], ENV["metrics_basic_auth"],
                                                   ENV["posthog_api_key"]]


def test_a_bad_database_url_is_reported_without_its_password() -> None:
    with pytest.raises(SettingsError) as err:
        from service.settings import ServiceSettings

        ServiceSettings.from_env({SERVICE_ENV["database_url"]: "postgresql://qa:S3cretPw@127.0.0.1:x/test"})
    assert "S3cretPw" not in str(err.value)
    assert f"{SERVICE_ENV['database_url']}='postgresql://qa:***@127.0.0.1:x/test'" in str(err.value)


def run_service(tmp_path: Path, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service", "--no-traffic", "--port", str(free_port()),
                           "--metrics-port", str(free_port()), "--data-dir", str(tmp_path)],
                          cwd=ROOT, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True,
                          timeout=timeout)


def test_a_failing_database_url_is_printed_without_its_password(tmp_path: Path) -> None:
    url = f"postgresql://qa:S3cretPw@127.0.0.1:{free_port()}/test"  # nothing listens there
    result = run_service(tmp_path, {SERVICE_ENV["database_url"]: url})
    assert result.returncode == 2, result.stderr
    assert "S3cretPw" not in result.stderr + result.stdout
    assert f"{SERVICE_ENV['database_url']}=postgresql://qa:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in result.stderr


def test_the_posthog_startup_line_hides_the_url_password(tmp_path: Path) -> None:
    from tests.service_process import ServiceProcess

    url = f"http://ph:S3cretPw@127.0.0.1:{free_port()}"
    with ServiceProcess(tmp_path, traffic=False, env={ENV["posthog_api_key"]: "phc_test",
                                                      ENV["posthog_url"]: url}) as service:
        service.wait_ready()
        lines = service.log_lines()
    assert any("PostHog analytics enabled" in line and "http://ph:***@127.0.0.1" in line for line in lines), lines
    assert not any("S3cretPw" in line for line in lines)


@pytest.mark.parametrize(("raw", "why"), [
    ("127.0.0.1:23204", "expected an http:// or https:// URL"),
    ("http://127.0.0.1:99999", "the port 99999 is not a port number from 0 to 65535"),
])
def test_a_bad_posthog_url_stops_the_service_and_the_cli_with_one_line(tmp_path: Path, raw: str, why: str) -> None:
    env = {ENV["posthog_api_key"]: "phc_test", ENV["posthog_url"]: raw}
    service = run_service(tmp_path, env)
    cli = subprocess.run([sys.executable, "-m", "telemetry", "simulate", "--port", "0", "--duration", "1"], cwd=ROOT,
                         env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=60)
    for result, prog in ((service, "service"), (cli, "tuist-telemetry")):
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines() == [f"{prog}: {ENV['posthog_url']}={raw!r} is not valid: {why}"]


def test_mapping_arguments_are_checked_at_setup() -> None:
    import telemetry

    try:
        with pytest.raises(SettingsError, match=rf"cardinality_limits \(env {ENV['cardinality_limits']}\) = .*nope"):
            telemetry.setup(cardinality_limits={"nope": 3}, serve=False, set_global=False)
    finally:
        telemetry.shutdown()
    with pytest.raises(SettingsError, match="at least 1"):
        Settings.from_env({}, cardinality_limits={"tuist_runs_total": 0})
    with pytest.raises(SettingsError, match="must be a whole number"):
        Settings.from_env({}, cardinality_limits={"tuist_runs_total": True})
    assert dict(Settings.from_env({}, cardinality_limits={"tuist_runs_total": "3"}).cardinality_limits) == {
        "tuist_runs_total": 3}


@pytest.mark.parametrize(("attr", "raw", "why"), [
    ("metrics_exemplar_filter", "sometimes", "expected one of trace_based, always_on, always_off"),
    ("otlp_metrics_timeout", "soon", "could not convert"),
    ("otlp_metrics_timeout", "0", "above 0"),
    ("otlp_timeout", "-2", "above 0"),
    ("otlp_endpoint", "127.0.0.1:4318", "expected an http:// or https:// URL"),
    ("otlp_traces_endpoint", "http://127.0.0.1:99999/v1/traces", "not a port number"),
])
def test_bad_standard_otel_values_name_the_variable(attr: str, raw: str, why: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{ENV[attr]}='{raw}' is not valid: .*{why}"):
        Settings.from_env({ENV[attr]: raw})


def test_standard_otel_values_reach_export_tracing_and_the_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    import telemetry
    from telemetry.cells import EXEMPLARS
    from telemetry.export import otlp_timeout_s
    from telemetry.registry import Registry
    from telemetry.tracing import otlp_traces_endpoint

    s = Settings.from_env({ENV["otlp_timeout"]: "4", ENV["metrics_exemplar_filter"]: " Always_Off ",
                           ENV["otlp_endpoint"]: "http://127.0.0.1:4318/"})
    assert (s.otlp_metrics_timeout, s.otlp_timeout, s.metrics_exemplar_filter) == (None, 4.0, "always_off")
    assert otlp_timeout_s(settings=s) == 4.0
    assert otlp_timeout_s(settings=s.replace(otlp_metrics_timeout=0.5)) == 0.5
    assert Settings.from_env({ENV["otlp_timeout"]: " "}).otlp_timeout is None  # set to nothing: unset
    assert s.replace(otlp_timeout="1.5").otlp_timeout == 1.5
    assert otlp_traces_endpoint(settings=s) == "http://127.0.0.1:4318/v1/traces"
    assert otlp_traces_endpoint(settings=s.replace(traces_exporter="none")) is None
    # The process environment, read through the settings: a bad value is a SettingsError naming the variable.
    monkeypatch.setenv(ENV["otlp_metrics_timeout"], "soon")
    with pytest.raises(SettingsError, match=f"^{ENV['otlp_metrics_timeout']}='soon' is not valid"):
        otlp_timeout_s()
    monkeypatch.delenv(ENV["otlp_metrics_timeout"])
    monkeypatch.setattr(EXEMPLARS, "enabled", EXEMPLARS.enabled)  # setup() sets this process-wide switch
    monkeypatch.setattr(EXEMPLARS, "always", EXEMPLARS.always)
    monkeypatch.setenv(ENV["metrics_exemplar_filter"], "sometimes")
    with pytest.raises(SettingsError, match=f"^{ENV['metrics_exemplar_filter']}='sometimes' is not valid"):
        telemetry.setup(registry=Registry(), serve=False, set_global=False, runtime_metrics=False)
    assert telemetry.current() is None
    monkeypatch.setenv(ENV["metrics_exemplar_filter"], "ALWAYS_ON")  # the SDK itself refuses this spelling
    try:
        telemetry.setup(registry=Registry(), serve=False, set_global=False, runtime_metrics=False)
        assert EXEMPLARS.always and EXEMPLARS.enabled
    finally:
        telemetry.shutdown()


# Modules that may read the process environment: the settings objects. Everything else gets its values from them.
ENVIRONMENT_READERS = {"telemetry/config.py", "service/settings.py"}
# Writing the environment is allowed anywhere: it is how settings are handed to child processes (workers).
_ENVIRON_WRITES = {"update"}


def environment_reads(source: str) -> list[tuple[int, str]]:
    """(line, code) of every read of the process environment in ``source``: os.environ subscripted, .get(),
    ``in``, iterated or passed on as a mapping, os.getenv(), ``from os import environ/getenv``. Item assignment,
    deletion and ``os.environ.update(...)`` are writes, not reads."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    os_names = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names if alias.name == "os"}
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [(node.lineno, f"from os import {a.name}") for a in node.names
                      if a.name in ("environ", "environb", "getenv", "getenvb", "*")]
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in os_names):
            continue
        if node.attr in ("getenv", "getenvb"):
            found.append((node.lineno, ast.unparse(parents.get(node, node))))
        elif node.attr in ("environ", "environb"):
            parent = parents.get(node)
            written = (isinstance(parent, ast.Subscript) and parent.value is node
                       and isinstance(parent.ctx, ast.Store | ast.Del))
            updated = (isinstance(parent, ast.Attribute) and parent.attr in _ENVIRON_WRITES
                       and isinstance(parents.get(parent), ast.Call) and parents[parent].func is parent)
            if not (written or updated):
                found.append((node.lineno, ast.unparse(parent if parent is not None else node)))
    return sorted(found)


def test_the_scan_finds_every_kind_of_environment_read() -> None:
    reads = environment_reads("import os\nimport os as o\nfrom os import getenv\n"
                              "a = os.environ['A']\nb = os.environ.get('B')\nc = 'C' in os.environ\n"
                              "d = o.getenv('D')\ne = dict(os.environ)\nf = f(environ=os.environ)\n"
                              "g = os.environ.copy()\n"
                              "os.environ['X'] = '1'\nos.environ.update({'Y': '2'})\ndel os.environ['X']\n")
    assert [line for line, _ in reads] == [3, 4, 5, 6, 7, 8, 9, 10]


def test_only_the_settings_objects_read_the_environment() -> None:
    reads = [f"{path.relative_to(ROOT)}:{line}: {code}"
             for package in ("telemetry", "service") for path in sorted((ROOT / package).rglob("*.py"))
             if str(path.relative_to(ROOT)) not in ENVIRONMENT_READERS
             for line, code in environment_reads(path.read_text())]
    assert not reads, "read the environment through telemetry.config / service.settings instead:\n" + \
        "\n".join(reads)
