"""A subscriber on the real broker that collects a test lab's messages."""

from __future__ import annotations

import csv
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from schemas.times import from_epoch_ms, parse_rfc3339
from tests.helpers import login

Row = tuple[str, str, str, datetime | None, float]  # (lab, device, sensor, time, value)


def decode_rows(topic: str, payload: bytes) -> list[Row]:
    """The readings of one telemetry message, decoded independently of the simulator.
    Form 1 readings get time None (the receiver's clock decides)."""
    root, lab, device, kind = topic.split("/")
    assert (root, kind) == ("livelab", "telemetry"), topic
    doc = json.loads(payload)
    rows: list[Row] = []
    for obj in doc if isinstance(doc, list) else [doc]:
        if "values" in obj:
            assert set(obj) <= {"ts", "values"}, obj
            ts = obj.get("ts")
            t = from_epoch_ms(ts) if isinstance(ts, int | float) else parse_rfc3339(ts)
            items = obj["values"].items()
        else:
            t, items = None, obj.items()
        rows.extend((lab, device, sensor, t, float(value)) for sensor, value in items)
    return rows


def csv_rows(path: str | Path) -> list[Row]:
    """The rows of a ``--record`` file (checks the header too)."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        assert next(reader) == ["lab", "device", "sensor", "time", "value"]
        return [(lab, dev, s, parse_rfc3339(t), float(v)) for lab, dev, s, t, v in reader]


class Collector:
    """Subscribes to ``livelab/{lab}/#`` at QoS 1 and keeps every message in arrival order."""

    def __init__(self, host: str, port: int, lab: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: subscribed.set()
        login(self.client)
        self.client.connect(host, port)
        self.client.subscribe(f"livelab/{lab}/#", qos=1)
        self.client.loop_start()
        assert subscribed.wait(5), "no SUBACK from the broker"

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0, settle: float = 0.3) -> int:
        """Wait until `count` messages arrived, then `settle` s more to catch any extra."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count and time.monotonic() < deadline:
                self._cond.wait(0.1)
        time.sleep(settle)
        return len(self.messages)

    def rows(self) -> list[Row]:
        return [row for topic, payload in self.messages for row in decode_rows(topic, payload)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def collector(mqtt_broker: tuple[str, int], lab: str) -> Iterator[Collector]:
    c = Collector(*mqtt_broker, lab)
    yield c
    c.close()


@pytest.fixture
def decode() -> Callable[[str, bytes], list[Row]]:
    """`decode_rows`: a telemetry message's readings."""
    return decode_rows


@pytest.fixture
def read_csv() -> Callable[[str | Path], list[Row]]:
    """`csv_rows`: the readings of a recorded CSV file."""
    return csv_rows


# --- The HTTP API as a real process (for the delivery audit) ---------------------------------


class ApiServer:
    """`livelab-api serve` on a free port against the test database, as a subprocess."""

    def __init__(self, database_url: str, log_dir: Path, **env: str) -> None:
        import os
        import subprocess
        import sys

        from tests.helpers import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"api-{self.port}.log"
        script = Path(sys.executable).with_name("livelab-api")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "api"]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [*command, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env={
                **os.environ,
                "LIVELAB_DATABASE_URL": database_url,
                "LIVELAB_API_MIGRATE": "false",  # the session's database is migrated already
                "LIVELAB_API_KEY_CACHE_SECONDS": "0",
                "LIVELAB_LOG_LEVEL": "WARNING",
                **env,
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready(30.0)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"livelab-api serve exited:\n{self.log()}", pytrace=False)
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail(f"livelab-api serve not ready within {timeout} s:\n{self.log()}", pytrace=False)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except Exception:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


@pytest.fixture(scope="session")
def api_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """One real API process for the session, on the session's database."""
    server = ApiServer(database_url, tmp_path_factory.mktemp("api"))
    yield server
    server.stop()


@pytest.fixture
def start_api(database_url: str, tmp_path: Path) -> Iterator[Callable[..., ApiServer]]:
    """start_api(LIVELAB_X="...", ...) -> an API process with those settings, for one test."""
    started: list[ApiServer] = []

    def start(**env: str) -> ApiServer:
        server = ApiServer(database_url, tmp_path, **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def api_key(db: Any, lab: str) -> str:
    """A new API key scoped to this test's lab."""
    from api import keys

    key, _ = keys.create_key(db, "audit-test", [lab])
    return key
