"""Checks of the provisioning files: shell scripts, docker-compose.yml and the broker config.

The compose checks need the `docker compose` client only (no engine): `docker compose config`
validates and normalises the file. Without the client they fall back to PyYAML.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = [*sorted(p for p in (ROOT / "scripts").iterdir() if p.is_file()), ROOT / ".ci" / "run"]
SCRIPT_IDS = [str(p.relative_to(ROOT)) for p in SCRIPTS]

# Each service of the demo stack and what it must wait for before it starts.
SERVICES: dict[str, dict[str, str]] = {
    "timescaledb": {},
    "mqtt-init": {},
    "mosquitto": {"mqtt-init": "service_completed_successfully"},
    "mqtt-credentials": {"mosquitto": "service_healthy"},
    "migrate": {"timescaledb": "service_healthy"},
    "ingest": {
        "migrate": "service_completed_successfully",
        "mqtt-credentials": "service_completed_successfully",
    },
    "api": {"migrate": "service_completed_successfully"},
    "simulator": {"ingest": "service_healthy"},
}
# The one-shot and the simulator have nothing to probe; everything long-running is probed.
WITH_HEALTHCHECK = {"timescaledb", "mosquitto", "ingest", "api"}


def test_scripts_found() -> None:
    names = {p.name for p in SCRIPTS}
    assert {"setup", "test", "check", "run"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=SCRIPT_IDS)
def test_script_syntax(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=SCRIPT_IDS)
def test_script_is_executable_bash(script: Path) -> None:
    assert os.access(script, os.X_OK), f"{script} is not executable"
    first = script.read_text().splitlines()[0]
    assert first in ("#!/usr/bin/env bash", "#!/bin/bash"), first
    assert "set -euo pipefail" in script.read_text()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck() -> None:
    # Warnings and errors only: shellcheck 0.9's "info" SC2317 misreads trap handlers.
    result = subprocess.run(
        ["shellcheck", "--severity=warning", *map(str, SCRIPTS)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_scripts_test() -> None:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "exec scripts/test" in lines


def test_setup_help() -> None:
    result = subprocess.run([ROOT / "scripts" / "setup", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "--quiet" in result.stdout
    bad = subprocess.run([ROOT / "scripts" / "setup", "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "unknown option" in bad.stderr


def test_setup_second_run_succeeds() -> None:
    """scripts/test ran setup just before pytest, so this run finds nothing to do."""
    result = subprocess.run(
        [ROOT / "scripts" / "setup", "--quiet"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "", f"--quiet printed: {result.stdout}"


# ---------------------------------------------------------------------------------------------
# docker-compose.yml


@cache
def have_compose() -> bool:
    if shutil.which("docker") is None:
        return False
    result = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    return result.returncode == 0


@cache
def compose_config() -> dict[str, Any]:
    """The compose file, normalised by `docker compose config` when the client is here."""
    if have_compose():
        result = subprocess.run(
            ["docker", "compose", "config", "--format", "json"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        )
        config: dict[str, Any] = json.loads(result.stdout)
        return config
    yaml = pytest.importorskip("yaml", reason="neither `docker compose` nor PyYAML is available")
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


@pytest.mark.skipif(not have_compose(), reason="the `docker compose` client is not installed")
def test_compose_config_is_valid() -> None:
    result = subprocess.run(
        ["docker", "compose", "config", "--quiet"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr


def test_compose_services() -> None:
    assert set(compose_config()["services"]) == set(SERVICES)


@pytest.mark.parametrize("name", SERVICES)
def test_compose_service_waits_and_is_probed(name: str) -> None:
    service = compose_config()["services"][name]
    depends_on = service.get("depends_on", {})
    conditions = {dep: spec["condition"] for dep, spec in depends_on.items()}
    assert conditions == SERVICES[name]
    if name in WITH_HEALTHCHECK:
        test = service["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1
        assert service["healthcheck"].get("timeout"), "a probe needs a timeout"


@pytest.mark.parametrize("name", ["migrate", "ingest", "api", "simulator"])
def test_compose_livelab_environment(name: str) -> None:
    env = compose_config()["services"][name]["environment"]
    assert env["LIVELAB_DATABASE_URL"] == "postgresql://livelab:livelab@timescaledb:5432/livelab"
    assert env["LIVELAB_MQTT_HOST"] == "mosquitto"
    assert str(env["LIVELAB_MQTT_PORT"]) == "1883"


def test_compose_broker_uses_livelab_conf() -> None:
    volumes = compose_config()["services"]["mosquitto"]["volumes"]
    text = json.dumps(volumes)
    assert "deploy/mosquitto/livelab.conf" in text
    assert "/mosquitto/config/conf.d/livelab.conf" in text
    main = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    assert re.search(r"^include_dir /mosquitto/config/conf\.d$", main, re.M)
    assert re.search(r"^persistence true$", main, re.M)


# ---------------------------------------------------------------------------------------------
# Broker settings


def conf_options(path: Path) -> dict[str, str]:
    options = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            options[key] = value.strip()
    return options


def test_the_brokers_refuse_anonymous_clients() -> None:
    """Setup's security.conf and compose's mosquitto.conf: credentials from the dynamic
    security plugin, nobody without one."""
    for name in ("security.conf", "mosquitto.conf"):
        options = conf_options(ROOT / "deploy" / "mosquitto" / name)
        assert options["allow_anonymous"] == "false", name
        assert options["plugin"] in ("@DYNSEC_PLUGIN@", "/usr/lib/mosquitto_dynamic_security.so")
        assert options["plugin_opt_config_file"], name


def test_livelab_conf_keeps_queued_messages() -> None:
    """Mosquitto's default (1000 per client) silently drops readings while ingest is away."""
    options = conf_options(ROOT / "deploy" / "mosquitto" / "livelab.conf")
    assert int(options["max_queued_messages"]) >= 100_000
    assert options["max_queued_bytes"] == "0"
    # Persistence lives in the main config: mosquitto 2 rejects a duplicate location.
    assert "persistence_location" not in options


def test_setup_without_apt_says_what_to_do(tmp_path: Path) -> None:
    """On a machine without apt, setup stops at once with a message saying what to do."""
    if os.geteuid() != 0:
        pytest.skip("the no-apt path is reached as root (a user without sudo stops earlier)")
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    # Just the tools the script uses before it looks for apt; no apt-get, no dpkg-query.
    for tool in ("bash", "id", "dirname", "mktemp", "rm", "cat", "tail"):
        found = shutil.which(tool)
        assert found, tool
        (fakebin / tool).symlink_to(found)
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup"), "--quiet"],
        env={"PATH": str(fakebin), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 1, run.stderr
    assert "supports Debian/Ubuntu" in run.stderr
    assert "docker compose" in run.stderr
