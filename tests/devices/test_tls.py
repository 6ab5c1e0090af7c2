"""TLS for devices: the broker's TLS listener with certificates from the development CA that
scripts/setup makes (deploy/mosquitto/make-dev-certs); the simulator and the worker connect
with that CA, and a client that does not trust it is refused."""

from __future__ import annotations

import json
import ssl

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices import credentials
from devices.dynsec import BrokerUnavailable, Dynsec, tls_context
from ingest.worker import Worker
from simulators.errors import BrokerUnreachable
from simulators.publisher import Publisher
from tests.helpers import count_readings, wait_for, worker_settings


def test_the_simulator_and_the_worker_connect_over_tls_with_the_ca(
    tls_broker, database_url, db, lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tls_broker.tls_port is not None
    username, password = tls_broker.services["ingest"]
    worker = Worker(
        worker_settings(
            database_url, (tls_broker.host, tls_broker.tls_port), lab,
            mqtt_username=username, mqtt_password=password, mqtt_tls_ca=str(tls_broker.ca),
        )
    )  # fmt: skip
    worker.start()
    try:
        assert worker.wait_ready(10), "the worker did not connect over TLS"
        with Dynsec(
            host=tls_broker.host, port=tls_broker.tls_port, username=tls_broker.admin[0],
            password=tls_broker.admin[1], tls=tls_context(str(tls_broker.ca)),
        ) as ds:  # fmt: skip
            cred, device_password = credentials.create(ds, lab, "aq-01")
        monkeypatch.setenv("LIVELAB_MQTT_USERNAME", cred.username)
        monkeypatch.setenv("LIVELAB_MQTT_PASSWORD", device_password)
        monkeypatch.setenv("LIVELAB_MQTT_TLS_CA", str(tls_broker.ca))
        with Publisher(host=tls_broker.host, port=tls_broker.tls_port, qos=1) as pub:
            pub.connect()
            for i in range(3):
                reading = {"ts": f"2026-06-01T12:00:0{i}Z", "values": {"no2": float(i)}}
                pub.publish(f"livelab/{lab}/aq-01/telemetry", json.dumps(reading).encode())
        wait_for(lambda: count_readings(db, lab) == 3, what="the readings sent over TLS")
    finally:
        worker.stop(grace=5)


# paho 2.2 leaves the socket of a failed TLS handshake to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_client_without_the_ca_is_refused(tls_broker, monkeypatch: pytest.MonkeyPatch) -> None:
    assert tls_broker.tls_port is not None
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(*tls_broker.services["sim"])
    client.tls_set_context(ssl.create_default_context())  # the system's CAs only
    with pytest.raises(ssl.SSLCertVerificationError):
        client.connect(tls_broker.host, tls_broker.tls_port)
    with pytest.raises(BrokerUnavailable, match="cannot connect"):
        Dynsec(
            host=tls_broker.host, port=tls_broker.tls_port, username=tls_broker.admin[0],
            password=tls_broker.admin[1], tls=tls_context(None),
        ).__enter__()  # fmt: skip
    # Plain MQTT to the TLS port is not answered either.
    monkeypatch.delenv("LIVELAB_MQTT_TLS_CA", raising=False)
    monkeypatch.setenv("LIVELAB_MQTT_USERNAME", tls_broker.services["sim"][0])
    monkeypatch.setenv("LIVELAB_MQTT_PASSWORD", tls_broker.services["sim"][1])
    with pytest.raises(BrokerUnreachable):
        Publisher(host=tls_broker.host, port=tls_broker.tls_port, connect_timeout=3).connect()
