"""Device credentials on a real Mosquitto secured like the one scripts/setup installs (the
dynamic security plugin, anonymous off): what a credential may publish, that the worker gets
everything a lab's devices send, that revoked and unknown credentials are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from devices import credentials
from devices.__main__ import read_env_file
from tests.helpers import count_readings, rejected_messages, wait_for, worker_settings

NOT_AUTHORIZED = 135
NO_SUBSCRIBERS = 16  # accepted; nobody subscribes to it


class Device:
    """An MQTT 5 client logged in as `username`; `publish` returns the broker's PUBACK reason."""

    def __init__(self, broker, username: str | None, password: str | None) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.connack: ReasonCode | None = None
        self.disconnected = threading.Event()
        self.acks: dict[int, ReasonCode] = {}
        self.subacks: list[ReasonCode] = []
        self.client.on_connect = lambda _c, _u, _f, rc, _p: setattr(self, "connack", rc)
        self.client.on_disconnect = lambda *_: self.disconnected.set()
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self.acks.__setitem__(mid, rc)
        self.client.on_subscribe = lambda _c, _u, _m, rcs, _p: self.subacks.extend(rcs)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        wait_for(lambda: self.connack is not None or self.disconnected.is_set(), what="CONNACK")

    @property
    def accepted(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def publish(self, topic: str, payload: dict) -> int:
        info = self.client.publish(topic, json.dumps(payload), qos=1)
        wait_for(lambda: info.mid in self.acks, what=f"PUBACK for {topic}")
        return self.acks[info.mid].value

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def secure_worker(secure_broker, database_url):
    """An ingest worker on the secure broker with the ingest service's credential, for every
    lab (livelab/#), in a share group as production runs it."""
    from ingest.worker import Worker

    username, password = secure_broker.services["ingest"]
    worker = Worker(
        worker_settings(
            database_url, (secure_broker.host, secure_broker.port), "unused",
            ingest_topics="livelab/#", ingest_share_group="livelab",
            mqtt_username=username, mqtt_password=password,
        )
    )  # fmt: skip
    worker.start()
    try:
        assert worker.wait_ready(10), "the ingest credential could not connect and subscribe"
        yield worker
    finally:
        worker.stop(grace=5)


def _lab(name: str) -> str:
    return f"{name}{os.urandom(4).hex()}"


def test_a_credential_publishes_only_under_its_own_lab_and_device(
    secure_broker, secure_worker, db
) -> None:
    lab_a, lab_b = _lab("a"), _lab("b")
    with secure_broker.dynsec() as ds:
        cred, password = credentials.create(ds, lab_a, "aq-01")
    dev = Device(secure_broker, cred.username, password)
    try:
        assert dev.accepted
        reading = {"ts": "2026-06-01T12:00:00Z", "values": {"no2": 1.0}}
        assert dev.publish(f"livelab/{lab_b}/aq-01/telemetry", reading) == NOT_AUTHORIZED
        assert dev.publish(f"livelab/{lab_a}/aq-02/telemetry", reading) == NOT_AUTHORIZED
        assert dev.publish(f"livelab/{lab_b}/x/y/telemetry", reading) == NOT_AUTHORIZED
        assert dev.publish(f"other/{lab_a}/aq-01/telemetry", reading) == NOT_AUTHORIZED
        assert dev.publish(f"livelab/{lab_a}/aq-01/telemetry", reading) == 0
        # Messages are handled in order: once the last one is stored, the refused ones would be.
        wait_for(lambda: count_readings(db, lab_a) == 1, what="lab A's reading")
        assert count_readings(db, lab_b) == 0
        assert rejected_messages(db, lab_b) == 0
        assert rejected_messages(db, lab_a) == 0
        row = db.execute("SELECT count(*) FROM series WHERE lab = %s", (lab_b,)).fetchone()
        assert row == (0,)
        devices = db.execute("SELECT device FROM series WHERE lab = %s", (lab_a,)).fetchall()
        assert devices == [("aq-01",)]
        dev.client.subscribe(f"livelab/{lab_a}/#", qos=1)
        wait_for(lambda: dev.subacks, what="SUBACK")
        assert dev.subacks[0].is_failure, "a device credential must not subscribe"
    finally:
        dev.close()


def test_a_gateway_credential_gets_every_device_of_its_lab_ingested(
    secure_broker, secure_worker, db
) -> None:
    lab, other = _lab("g"), _lab("o")
    with secure_broker.dynsec() as ds:
        cred, password = credentials.create(ds, lab)
    assert cred.device == credentials.GATEWAY
    dev = Device(secure_broker, cred.username, password)
    try:
        for i in range(5):
            reading = {"ts": f"2026-06-01T12:00:0{i}Z", "values": {"v": float(i)}}
            assert dev.publish(f"livelab/{lab}/dev-{i}/telemetry", reading) == 0
        assert dev.publish(f"livelab/{other}/dev-0/telemetry", {"v": 1}) == NOT_AUTHORIZED
        wait_for(lambda: count_readings(db, lab) == 5, what="every device's reading")
        assert count_readings(db, other) == 0
        assert rejected_messages(db, other) == 0
    finally:
        dev.close()


def test_revoked_unknown_and_anonymous_clients_are_refused(secure_broker) -> None:
    lab = _lab("r")
    with secure_broker.dynsec() as ds:
        cred, password = credentials.create(ds, lab, "aq-01")
        kept, _ = credentials.create(ds, lab, "aq-02")
        assert [c.username for c in credentials.list_credentials(ds, lab)] == sorted(
            [cred.username, kept.username]
        )
    dev = Device(secure_broker, cred.username, password)
    assert dev.accepted
    with secure_broker.dynsec() as ds:
        credentials.revoke(ds, cred.username)
        assert [c.username for c in credentials.list_credentials(ds, lab)] == [kept.username]
    assert dev.disconnected.wait(10), "the broker keeps a revoked credential's connection"
    dev.close()
    for username, pw in [(cred.username, password), (kept.username, "wrong"), ("nobody", "x"),
                         (None, None)]:  # fmt: skip
        refused = Device(secure_broker, username, pw)
        try:
            assert not refused.accepted, f"{username} was let in"
        finally:
            refused.close()


def test_the_services_have_only_their_own_rights(secure_broker) -> None:
    lab = _lab("s")
    sim = Device(secure_broker, *secure_broker.services["sim"])
    ingest = Device(secure_broker, *secure_broker.services["ingest"])
    try:
        assert sim.publish(f"livelab/{lab}/d/telemetry", {"v": 1}) == NO_SUBSCRIBERS
        assert sim.publish("elsewhere/x", {"v": 1}) == NOT_AUTHORIZED
        assert ingest.publish(f"livelab/{lab}/d/telemetry", {"v": 1}) == NOT_AUTHORIZED
        sim.client.subscribe("livelab/#", qos=1)
        wait_for(lambda: sim.subacks, what="SUBACK")
        assert sim.subacks[0].is_failure
    finally:
        sim.close()
        ingest.close()


def test_parse_username_tells_device_credentials_from_the_rest() -> None:
    assert credentials.parse_username("lab-1/aq-01/0a1b2c3d") == credentials.Credential(
        "lab-1/aq-01/0a1b2c3d", "lab-1", "aq-01"
    )
    assert credentials.parse_username("lab-1/+/0a1b2c3d").device == credentials.GATEWAY  # type: ignore[union-attr]
    for other in ["livelab-ingest", "admin", "Lab/aq/0a1b2c3d", "lab/aq/xyz", "lab/a/b/0a1b2c3d"]:
        assert credentials.parse_username(other) is None
    with pytest.raises(ValueError, match="invalid lab"):
        credentials.create(None, "Bad Lab")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid device"):
        credentials.create(None, "lab", "a/b")  # type: ignore[arg-type]


def _cli(broker, env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LIVELAB_MQTT_HOST": broker.host,
        "LIVELAB_MQTT_PORT": str(broker.port),
        "LIVELAB_MQTT_ENV_FILE": str(env_file),
    }
    for key in ("LIVELAB_MQTT_ADMIN_USERNAME", "LIVELAB_MQTT_ADMIN_PASSWORD"):
        env.pop(key, None)
    return subprocess.run(
        [sys.executable, "-m", "devices", *args], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def test_the_command_line_bootstraps_services_creates_lists_and_revokes(
    secure_broker, tmp_path: Path
) -> None:
    env_file = tmp_path / "mqtt.env"
    admin = secure_broker.admin
    env_file.write_text(
        f"LIVELAB_MQTT_ADMIN_USERNAME={admin[0]}\nLIVELAB_MQTT_ADMIN_PASSWORD={admin[1]}\n"
    )
    assert _cli(secure_broker, env_file, "bootstrap").returncode == 0
    first = read_env_file(env_file)
    assert env_file.stat().st_mode & 0o077 == 0
    assert _cli(secure_broker, env_file, "bootstrap").returncode == 0
    assert read_env_file(env_file) == first, "a second bootstrap must keep the passwords"
    tests = Device(
        secure_broker, first["LIVELAB_MQTT_TESTS_USERNAME"], first["LIVELAB_MQTT_TESTS_PASSWORD"]
    )
    assert tests.accepted
    tests.close()

    lab = _lab("c")
    created = _cli(secure_broker, env_file, "create", "--lab", lab, "--device", "aq-01")
    assert created.returncode == 0, created.stderr
    printed = dict(line.split("=", 1) for line in created.stdout.splitlines())
    dev = Device(secure_broker, printed["username"], printed["password"])
    assert dev.publish(f"livelab/{lab}/aq-01/telemetry", {"v": 1}) == NO_SUBSCRIBERS
    dev.close()
    listed = _cli(secure_broker, env_file, "list", "--lab", lab)
    assert listed.stdout == f"{printed['username']}\tlivelab/{lab}/aq-01/#\n"
    assert _cli(secure_broker, env_file, "revoke", printed["username"]).returncode == 0
    assert _cli(secure_broker, env_file, "list", "--lab", lab).stdout == ""
    bad = _cli(secure_broker, env_file, "revoke", "livelab-ingest")
    assert bad.returncode != 0 and "not a device credential" in bad.stderr
    env_file.write_text("LIVELAB_MQTT_ADMIN_PASSWORD=wrong\n")
    refused = _cli(secure_broker, env_file, "list")
    assert refused.returncode != 0 and "refused the admin login" in refused.stderr


def test_a_worker_whose_subscription_is_refused_is_not_ready(secure_broker, database_url) -> None:
    # Connected is not enough: a worker given a device's credential by mistake connects, but
    # the broker refuses its subscription, and /ready must say so (issue 7: subscribed).
    from ingest.worker import Worker

    lab = _lab("r")
    with secure_broker.dynsec() as ds:
        cred, password = credentials.create(ds, lab, "aq-01")
    worker = Worker(
        worker_settings(
            database_url, (secure_broker.host, secure_broker.port), lab,
            mqtt_username=cred.username, mqtt_password=password,
        )
    )  # fmt: skip
    worker.start()
    try:
        wait_for(lambda: worker.metrics.connects._value.get() >= 1, what="connected")
        wait_for(lambda: "refused the subscription" in worker.ready()[1], what="the reason")
        assert not worker.ready()[0]
    finally:
        worker.stop(grace=1)
