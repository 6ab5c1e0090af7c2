"""Fixtures for tests on the real services.

- The database: a fresh database per test session, created from the server given by
  ``LIVELAB_TEST_DATABASE_URL`` (default: the local server scripts/setup provisions), migrated,
  and dropped at the end. Tests never share rows: each one takes its own `lab` name.
- The broker: ``LIVELAB_TEST_MQTT_HOST`` / ``LIVELAB_TEST_MQTT_PORT`` (default 127.0.0.1:1883),
  with the test suite's credential from the file scripts/setup writes (``LIVELAB_MQTT_ENV_FILE``,
  default /etc/livelab/mqtt.env: ``LIVELAB_MQTT_TESTS_USERNAME`` / ``_PASSWORD``), put in
  ``LIVELAB_MQTT_USERNAME`` / ``_PASSWORD`` for the workers, simulators and clients the tests
  start. Without that file the broker is used anonymously (a broker setup has not secured yet).

A missing service is an error, not a skip: CI must not pass without them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devices import credentials as device_credentials
from devices.__main__ import env_file, read_env_file
from devices.dynsec import Dynsec
from ingest.worker import Worker
from schemas.migrate import migrate
from tests.helpers import (
    PrivatePostgres,
    Publisher,
    forget_session,
    free_port,
    wait_for,
    worker_settings,
)

ADMIN_URL = os.environ.get(
    "LIVELAB_TEST_DATABASE_URL", "postgresql://livelab:livelab@127.0.0.1:5432/postgres"
)
MQTT_HOST = os.environ.get("LIVELAB_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("LIVELAB_TEST_MQTT_PORT", "1883"))
_SETUP = read_env_file(env_file())
if "LIVELAB_MQTT_USERNAME" not in os.environ and "LIVELAB_MQTT_TESTS_USERNAME" in _SETUP:
    os.environ["LIVELAB_MQTT_USERNAME"] = _SETUP["LIVELAB_MQTT_TESTS_USERNAME"]
    os.environ["LIVELAB_MQTT_PASSWORD"] = _SETUP.get("LIVELAB_MQTT_TESTS_PASSWORD", "")


@contextlib.contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A new, empty database on the test server (its URL), dropped on exit."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {ADMIN_URL} ({exc}); run scripts/setup first",
            pytrace=False,
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(ADMIN_URL)
    params["dbname"] = name
    try:
        yield make_conninfo(**params)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A migrated database of its own for this test session."""
    with scratch_database("livelab_test") as url:
        migrate(url)
        yield url


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the session's database, for assertions."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def mqtt_broker() -> tuple[str, int]:
    """(host, port) of the real Mosquitto; fails the test when it is not listening."""
    try:
        socket.create_connection((MQTT_HOST, MQTT_PORT), timeout=3).close()
    except OSError as exc:
        pytest.fail(
            f"no MQTT broker at {MQTT_HOST}:{MQTT_PORT} ({exc}); run scripts/setup first",
            pytrace=False,
        )
    return MQTT_HOST, MQTT_PORT


@pytest.fixture
def lab() -> str:
    """A lab name no other test uses, so tests never see each other's rows or messages."""
    return f"t{secrets.token_hex(6)}"


@pytest.fixture
def start_worker(database_url: str, mqtt_broker: tuple[str, int], lab: str) -> Iterator:
    """Start workers for this test's lab; they are stopped and their sessions removed after."""
    started: list[Worker] = []

    def start(**extra) -> Worker:
        url = extra.pop("database_url", database_url)
        worker = Worker(worker_settings(url, mqtt_broker, lab, **extra))
        worker.start()
        started.append(worker)
        assert worker.wait_ready(10), "worker did not connect and subscribe"
        return worker

    yield start
    for worker in started:
        worker.stop(grace=5)
        forget_session(*mqtt_broker, worker.settings.ingest_client_id)


@pytest.fixture
def publisher(mqtt_broker: tuple[str, int]) -> Iterator[Publisher]:
    pub = Publisher(*mqtt_broker)
    yield pub
    pub.close()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running PostgreSQL + timescaledb of this test's own; `stop()`/`start()` restart it."""
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


LIVELAB_MOSQUITTO_CONF = Path(__file__).resolve().parent.parent / "deploy/mosquitto/livelab.conf"


class PrivateBroker:
    """A Mosquitto of a test's own, persistence on, in `root`; extra `options` are appended.

    `restart()` stops it cleanly (it saves its persistence file on exit) and starts it again;
    `kill()` SIGKILLs it, as a crash would: only what it had saved survives `start()`.
    """

    def __init__(self, root: Path, options: str = "", anonymous: bool = True) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            pytest.fail("mosquitto is not installed; run scripts/setup", pytrace=False)
        self.exe = exe
        self.host = "127.0.0.1"
        self.port = free_port()
        self.conf = root / "mosquitto.conf"
        self.db_file = root / "mosquitto.db"  # mosquitto's default persistence_file
        # As root, mosquitto would switch to the 'mosquitto' user, which cannot write its
        # persistence file in pytest's private tmp dir: keep it the current user.
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"listener {self.port} {self.host}\nallow_anonymous {str(anonymous).lower()}\n"
            "persistence true\n"
            f"persistence_location {root}/\n{user}{options}\n"
        )
        self.procs: list[subprocess.Popen[bytes]] = []

    def _listening(self) -> bool:
        try:
            socket.create_connection((self.host, self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def start(self) -> None:
        self.procs.append(
            subprocess.Popen(
                [self.exe, "-c", str(self.conf)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for(self._listening, timeout=10, what="private mosquitto")

    def restart(self) -> None:
        self.procs[-1].send_signal(signal.SIGTERM)  # mosquitto saves its persistence file on exit
        self.procs[-1].wait(10)
        self.start()

    def kill(self) -> None:
        self.procs[-1].send_signal(signal.SIGKILL)  # no exit code runs: nothing more is saved
        self.procs[-1].wait(10)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[tuple[str, int, Any]]:
    """A Mosquitto of this test's own (persistence on), and a function that restarts it."""
    broker = PrivateBroker(tmp_path, "max_queued_messages 1000000")
    try:
        broker.start()
        yield broker.host, broker.port, broker.restart
    finally:
        broker.close()


@pytest.fixture
def livelab_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    """A private Mosquitto with deploy/mosquitto/livelab.conf's options, the ones scripts/setup
    installs and compose mounts; it can be restarted and killed."""
    broker = PrivateBroker(tmp_path, LIVELAB_MOSQUITTO_CONF.read_text())
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


MAKE_DEV_CERTS = LIVELAB_MOSQUITTO_CONF.parent / "make-dev-certs"
DYNSEC_PLUGIN = next(iter(sorted(Path("/usr/lib").glob("**/mosquitto_dynamic_security.so"))), None)


class SecureBroker(PrivateBroker):
    """A private Mosquitto secured as scripts/setup secures the system one: the dynamic security
    plugin, anonymous access off, livelab.conf's options, and the services' credentials
    (`services`: service -> (username, password)) made with `livelab-devices`' code."""

    admin = ("admin", "admin-password")

    def __init__(self, root: Path, options: str = "", tls: bool = False) -> None:
        if DYNSEC_PLUGIN is None or shutil.which("mosquitto_ctrl") is None:
            pytest.fail("mosquitto's dynamic security plugin or mosquitto_ctrl is missing; "
                        "run scripts/setup", pytrace=False)  # fmt: skip
        config = root / "dynsec.json"
        self.tls_port: int | None = None
        self.ca: Path | None = None
        if tls:  # a TLS listener with certificates from setup's script
            certs = root / "tls"
            subprocess.run([str(MAKE_DEV_CERTS), str(certs)], check=True, capture_output=True)
            self.tls_port, self.ca = free_port(), certs / "ca.crt"
            options += (
                f"\nlistener {self.tls_port} 127.0.0.1\ncafile {self.ca}\n"
                f"certfile {certs}/server.crt\nkeyfile {certs}/server.key\n"
            )
        subprocess.run(
            ["mosquitto_ctrl", "dynsec", "init", str(config), *self.admin],
            check=True, capture_output=True,
        )  # fmt: skip
        super().__init__(
            root,
            f"plugin {DYNSEC_PLUGIN}\nplugin_opt_config_file {config}\n"
            f"{LIVELAB_MOSQUITTO_CONF.read_text()}\n{options}",
            anonymous=False,
        )
        self.services: dict[str, tuple[str, str]] = {}

    def dynsec(self, **tls: Any) -> Dynsec:
        return Dynsec(host=self.host, port=self.port, username=self.admin[0],
                      password=self.admin[1], **tls)  # fmt: skip

    def start(self) -> None:
        super().start()
        if not self.services:
            with self.dynsec() as ds:
                for service in device_credentials.SERVICES:
                    password = device_credentials.new_password()
                    username = device_credentials.ensure_service(ds, service, password)
                    self.services[service] = (username, password)


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[SecureBroker]:
    broker = SecureBroker(tmp_path)
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[SecureBroker]:
    """A `secure_broker` with a TLS listener too (`tls_port`, CA file `ca`)."""
    broker = SecureBroker(tmp_path, tls=True)
    try:
        broker.start()
        yield broker
    finally:
        broker.close()
