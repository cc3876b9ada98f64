"""Procfile, Procfile.dev, docker/Dockerfile, docker/compose.yaml and docker/prometheus.yml
agree with each other and with the code (none of the docker files can be run here).

Every command in the Procfiles must resolve: the ``tickstream`` subcommand exists in
``tickstream --help`` (and a collector kind in ``tickstream collect --help``), every
``--config`` file exists, and ``faust -A topology.app`` finds the app. Compose has a service
for every Procfile process that runs the same command.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO_ROOT
from honcho.environ import parse_procfile  # type: ignore[import-untyped]

from agents.health import PATH as HEALTH_PATH
from agents.metrics import PATH as METRICS_PATH
from topology.settings import Settings

DOCKER = REPO_ROOT / "docker"
COLLECTORS = REPO_ROOT / "config" / "collectors"


def procfile(name: str) -> dict[str, str]:
    """Process name -> command, as honcho (and foreman: the same line pattern) reads them."""
    text = (REPO_ROOT / name).read_text()
    processes = dict(parse_procfile(text).processes)
    commands = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(processes) == len(commands), f"{name}: a line that is neither a process nor #"
    return processes


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return data


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with the defaults (the variables unset)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def invocations(command: str) -> list[list[str]]:
    """Each ``tickstream ...`` / ``faust ...`` command a Procfile line runs (``exec`` or
    not), split at the shell's separators."""
    out = []
    command = re.sub(r"\d*>&?\s*[^\s;&|]+", " ", command)  # redirections
    for part in re.split(r"[;&|]+|\b(?:do|done|then|until|while)\b", command):
        words = shlex.split(part.replace("exec ", " "))
        while words and "=" in words[0]:  # VAR=value prefixes
            words.pop(0)
        if words and words[0] in ("tickstream", "faust"):
            out.append(words)
    return out


@cache
def help_text(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "topology.cli", *args, "--help"],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def subcommands() -> set[str]:
    return set(re.findall(r"^ {4}([a-z][a-z-]*) ", help_text(), re.M))


def collector_kinds() -> set[str]:
    match = re.search(r"\{([a-z0-9,]+)\}", help_text("collect"))
    assert match is not None
    return set(match.group(1).split(","))


def check_resolves(argv: list[str]) -> None:
    if argv[0] == "faust":
        assert argv[1:3] == ["-A", "topology.app"] and argv[3] == "worker", argv
        return  # test_the_faust_worker_line_finds_the_app
    sub = argv[1]
    assert sub in subcommands(), f"{argv}: no such subcommand in tickstream --help"
    if sub == "collect":
        assert argv[2] in collector_kinds(), argv
    if "--config" in argv:
        config = REPO_ROOT / argv[argv.index("--config") + 1]
        assert config.is_file(), f"{argv}: {config} does not exist"
        assert isinstance(yaml.safe_load(config.read_text()), dict), config


@pytest.mark.parametrize("name", ["Procfile", "Procfile.dev"])
def test_every_procfile_command_resolves(name: str) -> None:
    for process, command in procfile(name).items():
        found = invocations(command)
        assert found, f"{name} {process}: runs neither tickstream nor faust"
        for argv in found:
            check_resolves(argv)


def test_the_production_procfile_runs_the_worker_sink_and_each_configured_collector() -> None:
    processes = procfile("Procfile")
    assert {"worker", "sink"} <= processes.keys() and "broker" not in processes
    configs = {Path(argv[argv.index("--config") + 1]).name
               for command in processes.values() for argv in invocations(command)
               if "--config" in argv}
    venues = {p.name for p in COLLECTORS.glob("*.yaml")} - {"simulate.yaml"}
    assert configs == venues  # one line each, and no simulated ticks in production
    assert all(p.startswith("collect-") for p in processes.keys() - {"worker", "sink"})
    text = (REPO_ROOT / "Procfile").read_text()
    for variable in ("ICM_MT5_PASSWORD", "PEP_MT5_PASSWORD", "OANDA_API_TOKEN",
                     "POLYGON_API_KEY"):  # where each collector's credentials come from
        assert variable in text


def test_procfile_dev_runs_the_broker_a_worker_and_the_simulator() -> None:
    processes = procfile("Procfile.dev")
    assert processes.keys() == {"broker", "worker", "collect-simulator"}
    last = {name: invocations(cmd)[-1] for name, cmd in processes.items()}
    assert last["broker"][:2] == ["tickstream", "broker"]
    assert last["worker"][:2] == ["tickstream", "worker"]
    assert last["collect-simulator"][:3] == ["tickstream", "collect", "simulate"]


def test_the_faust_worker_line_finds_the_app(tmp_path: Path) -> None:
    """``faust -A topology.app worker`` (the production Procfile's worker) builds the app
    from the environment; nothing connects until the worker starts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKSTREAM_")}
    env |= {"TICKSTREAM_DATA_DIR": str(tmp_path / "worker"),
            "TICKSTREAM_MODEL_DIR": str(tmp_path / "models")}
    code = ("from faust.cli.base import find_app; from faust.cli.faust import cli;"
            "app = find_app('topology.app'); print(app.conf.id, 'worker' in cli.commands)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO_ROOT)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["tickstream", "True"]


def service_argv(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    argv = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
    return [interpolate(a) for a in argv]


def test_compose_has_a_service_for_every_procfile_process_running_the_same_command() -> None:
    services = compose()["services"]
    wanted = {**procfile("Procfile"),
              "collect-simulator": procfile("Procfile.dev")["collect-simulator"]}
    for process, command in wanted.items():
        assert process in services, f"docker/compose.yaml has no service {process}"
        argv = invocations(command)[-1]
        expected = ["worker"] if argv[0] == "faust" else argv[1:]
        got = service_argv(services[process])
        assert got[:len(expected)] == expected, (process, got, expected)
        check_resolves(["tickstream", *got])


def test_compose_publishes_the_ports_and_scrapes_the_worker() -> None:
    services = compose()["services"]
    assert "6066:6066" in services["worker"]["ports"]
    assert "--web-bind" in service_argv(services["worker"])
    assert "0.0.0.0" in service_argv(services["worker"])
    assert "8123:8123" in services["clickhouse"]["ports"]
    prometheus = services["prometheus"]
    mounted = [v.split(":")[0] for v in prometheus["volumes"]]
    assert "./prometheus.yml" in mounted and (DOCKER / "prometheus.yml").is_file()
    scrape = yaml.safe_load((DOCKER / "prometheus.yml").read_text())["scrape_configs"]
    jobs = [(j.get("metrics_path", "/metrics"), t) for j in scrape
            for s in j["static_configs"] for t in s["targets"]]
    assert (METRICS_PATH, "worker:6066") in jobs
    build = services["worker"]["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    # Only the worker serves /health/: the other tickstream services turn the image's
    # HEALTHCHECK off instead of reporting unhealthy for ever.
    for name, service in services.items():
        if service.get("image") == services["worker"]["image"] and name != "worker":
            assert service.get("healthcheck") == {"disable": True}, name
    assert "healthcheck" not in services["worker"]


def test_compose_and_dockerfile_settings_are_valid_settings() -> None:
    """A misspelt or malformed TICKSTREAM_* variable stops the process at start-up: none
    here (compose's ${VAR:-default} taken at its default)."""
    dockerfile = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    image_env = dict(re.findall(r"(TICKSTREAM_[A-Z_]+)=(\S+)", dockerfile))
    assert image_env
    for name, service in compose()["services"].items():
        env = {k: interpolate(str(v)) for k, v in (service.get("environment") or {}).items()
               if k.startswith("TICKSTREAM_")}
        if env:
            Settings.from_env({**image_env, **env}, env_file=None)  # raises on a bad one
            assert name


def test_the_dockerfile_builds_compiled_stages_and_checks_the_worker_health() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    joined = text.replace("\\\n", " ")
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert len(stages) == 2 and stages[0][1] == "builder", stages
    builder, runtime = re.split(r"^FROM .*$", text, flags=re.M)[1:]
    assert "tools/build_native.py" in builder and "native.compiled()" in builder
    assert "COPY --from=builder" in runtime and "gcc" not in runtime
    assert re.search(r"^COPY config \./config$", runtime, re.M)
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]
                ["include"]]
    for package in [*packages, "tools"]:  # pip install . needs every package's source
        assert re.search(rf"^COPY {package} \./{package}$", builder, re.M), package
    health = re.search(r"^HEALTHCHECK .*$", joined, re.M)
    assert health is not None
    assert HEALTH_PATH in health.group(0) and "TICKSTREAM_WEB_PORT" in health.group(0)
    assert "'6066'" in health.group(0) and "'unhealthy'" in health.group(0)
    assert "EXPOSE 6066" in text
    probe = re.search(r" CMD (\[.*\])$", health.group(0))  # exec form: valid JSON
    assert probe is not None and json.loads(probe.group(1))[:2] == ["python", "-c"]
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert cmd is not None and yaml.safe_load(cmd.group(1)) == ["worker", "--web-bind",
                                                                 "0.0.0.0"]
    assert "TICKSTREAM_WEB_PORT=6066" in joined
