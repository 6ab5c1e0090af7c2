"""What the benchmarks share: logging, the broker ceiling (Mosquitto's own C clients) and
where results go."""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devices.__main__ import env_file, read_env_file
from simulators.options import SimSettings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

# mosquitto_pub -l (2.0.11) wraps its message ids past 65,535 and then quietly disconnects
# early (exit 0, messages lost): it is fed at most this many lines per run.
MOSQUITTO_PUB_RUN = 50_000


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    """--mqtt-host and --mqtt-port (defaults: LIVELAB_MQTT_HOST / _PORT, via SimSettings)."""
    settings = SimSettings()
    parser.add_argument("--mqtt-host", default=settings.mqtt_host)
    parser.add_argument("--mqtt-port", type=int, default=settings.mqtt_port)


def mqtt_credential(role: str = "TESTS") -> tuple[str, str] | None:
    """The broker credential scripts/setup wrote for `role` (TESTS, INGEST, SIM), read from
    LIVELAB_MQTT_ENV_FILE (default /etc/livelab/mqtt.env); None on a broker without one."""
    values = read_env_file(env_file())
    user = values.get(f"LIVELAB_MQTT_{role}_USERNAME")
    password = values.get(f"LIVELAB_MQTT_{role}_PASSWORD")
    return (user, password) if user and password else None


def mqtt_login_args(role: str = "TESTS") -> list[str]:
    """``-u USER -P PASSWORD`` for Mosquitto's C clients, or nothing (anonymous)."""
    cred = mqtt_credential(role)
    return ["-u", cred[0], "-P", cred[1]] if cred else []


def mqtt_login_env(role: str) -> dict[str, str]:
    """LIVELAB_MQTT_USERNAME / _PASSWORD for a livelab process, or nothing (anonymous)."""
    cred = mqtt_credential(role)
    return {"LIVELAB_MQTT_USERNAME": cred[0], "LIVELAB_MQTT_PASSWORD": cred[1]} if cred else {}


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def mosquitto_pub_command(host: str, port: int, topic: str) -> list[str]:
    """``mosquitto_pub -l``: each line of its input one QoS 1 message on `topic`."""
    login = mqtt_login_args()
    return ["mosquitto_pub", "-h", host, "-p", str(port), *login, "-q", "1", "-M", "1000", "-t",
            topic, "-l"]  # fmt: skip


def mosquitto_pub(host: str, port: int, topic: str, lines: list[bytes]) -> None:
    """Publish each line (ending in a newline) as one QoS 1 message, with mosquitto_pub -l."""
    for i in range(0, len(lines), MOSQUITTO_PUB_RUN):
        subprocess.run(
            mosquitto_pub_command(host, port, topic),
            input=b"".join(lines[i : i + MOSQUITTO_PUB_RUN]),
            check=True,
        )


class Subscriber:
    """``mosquitto_sub -C n`` on a topic filter; `done_at` is when it had all n messages."""

    def __init__(self, host: str, port: int, topic: str, n: int) -> None:
        self.proc = subprocess.Popen(
            [
                "mosquitto_sub",
                "-h",
                host,
                "-p",
                str(port),
                *mqtt_login_args(),
                "-q",
                "1",
                "-t",
                topic,
                "-C",
                str(n),
            ],
            stdout=subprocess.DEVNULL,
        )
        self.done_at = 0.0
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()
        time.sleep(0.5)  # let the subscription settle

    def _wait(self) -> None:
        self.proc.wait()
        self.done_at = time.monotonic()

    def wait(self, timeout: float = 300) -> float:
        self._thread.join(timeout)
        if self.proc.poll() is None:
            self.proc.kill()
            raise SystemExit("bench: the subscriber did not receive every message")
        return self.done_at


def broker_ceiling(host: str, port: int, lines: list[bytes]) -> float:
    """Messages/s from mosquitto_pub to mosquitto_sub at QoS 1: the broker's own rate."""
    n = len(lines)
    topic = f"bench/{secrets.token_hex(4)}"
    sub = Subscriber(host, port, topic, n)
    started = time.monotonic()
    mosquitto_pub(host, port, topic, lines)
    return n / (sub.wait() - started)


def save_result(name: str, result: dict[str, Any]) -> Path:
    """Write bench/results/NAME-<unix time>.json and print the result as aligned lines."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{int(time.time())}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    width = max(len(key) for key in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    return path


@contextlib.contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new database on the server of `admin_url` (its URL), migrated, dropped on exit."""
    from schemas.migrate import migrate

    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(admin_url)
    params["dbname"] = name
    try:
        url = make_conninfo("", **params)
        migrate(url)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
