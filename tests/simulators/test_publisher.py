"""`Publisher` against the real Mosquitto: every message acknowledged and delivered, per-message
QoS, idle (stop, keepalive), reconnects after a dropped connection and a broker restart."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulators.errors import BrokerUnreachable
from simulators.publisher import Publisher
from tests.helpers import DroppingProxy, free_port, login, wait_for


class Subscriber:
    """Subscribes to ``livelab/{lab}/#`` at QoS 1; keeps (topic, payload, qos) of each message.

    With `client_id` the session is persistent (clean session off), so messages published
    while this subscriber is disconnected wait for it in the broker.
    """

    def __init__(self, host: str, port: int, lab: str, client_id: str | None = None) -> None:
        self.messages: list[tuple[str, bytes, int]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or "",
            clean_session=client_id is None,
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        login(self.client)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.on_connect = lambda *args: self.client.subscribe(f"livelab/{lab}/#", qos=1)
        self.client.connect(host, port)
        self.client.loop_start()
        assert subscribed.wait(5), "no SUBACK from the broker"

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), msg.qos))

    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def payloads(self) -> set[bytes]:
        with self._lock:
            return {payload for _, payload, _ in self.messages}

    def settle(self, expected: int, timeout: float = 20.0) -> int:
        """Wait for `expected` messages, then a moment more for any extra; the count."""
        wait_for(lambda: self.count() >= expected, timeout=timeout, what=f"{expected} messages")
        time.sleep(0.3)  # a message too many would arrive now
        return self.count()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber(mqtt_broker: tuple[str, int], lab: str) -> Iterator[Subscriber]:
    sub = Subscriber(*mqtt_broker, lab)
    yield sub
    sub.close()


def _payload(i: int) -> bytes:
    return b'{"ts":%d,"values":{"v":%d}}' % (1_780_000_000_000 + i, i)


@pytest.mark.parametrize(
    ("mqtt_version", "qos", "max_inflight"),
    [("3.1.1", 1, 1000), ("5", 1, 1000), ("3.1.1", 0, 1000), ("3.1.1", 1, 1)],
)
def test_every_message_is_acknowledged_and_delivered_once(
    mqtt_broker: tuple[str, int],
    lab: str,
    subscriber: Subscriber,
    mqtt_version: Any,
    qos: int,
    max_inflight: int,
) -> None:
    n = 300 if max_inflight == 1 else 5000
    topic = f"livelab/{lab}/pub-01/telemetry"
    with Publisher(
        host=mqtt_broker[0],
        port=mqtt_broker[1],
        qos=qos,
        mqtt_version=mqtt_version,
        max_inflight=max_inflight,
    ) as pub:
        for i in range(n):
            pub.publish(topic, _payload(i))
            assert pub.outstanding <= max_inflight
        assert pub.sent == n
        assert pub.wait_all(timeout=30)
        assert (pub.acknowledged, pub.outstanding, pub.failed, pub.dropped) == (n, 0, 0, 0)
    assert subscriber.settle(n) == n
    assert [p for _, p, _ in subscriber.messages] == [_payload(i) for i in range(n)]  # in order
    assert {q for *_, q in subscriber.messages} == {qos}


def test_per_message_qos_overrides_the_default(
    mqtt_broker: tuple[str, int], lab: str, subscriber: Subscriber
) -> None:
    topic = f"livelab/{lab}/pub-01/telemetry"
    with Publisher(host=mqtt_broker[0], port=mqtt_broker[1], qos=1) as pub:
        for i in range(200):
            pub.publish(topic, _payload(i), qos=0 if i % 2 else None)
        with pytest.raises(ValueError, match="qos must be 0 or 1"):
            pub.publish(topic, b"{}", qos=2)
        assert pub.sent == 200
    assert subscriber.settle(200) == 200
    qos_of = {payload: qos for _, payload, qos in subscriber.messages}
    assert qos_of == {_payload(i): 0 if i % 2 else 1 for i in range(200)}


def test_idle_returns_early_when_stop_is_set(mqtt_broker: tuple[str, int]) -> None:
    stop = threading.Event()
    with Publisher(host=mqtt_broker[0], port=mqtt_broker[1]) as pub:
        assert pub.idle(0.1, stop) is False
        assert pub.idle(0.1) is False
        timer = threading.Timer(0.3, stop.set)
        timer.start()
        began = time.monotonic()
        assert pub.idle(60, stop) is True
        assert time.monotonic() - began < 30  # not the 60 s asked for
        assert pub.idle(60, stop) is True  # already set: returns at once
        timer.join()


def test_idle_keeps_the_connection_alive_past_the_keepalive(
    mqtt_broker: tuple[str, int], lab: str, subscriber: Subscriber
) -> None:
    # Mosquitto drops a client silent for 1.5 x keepalive (1.5 s here); it looks every few
    # seconds (seen: within 5 s), so 8 s of idling without pings would lose the connection.
    with Publisher(host=mqtt_broker[0], port=mqtt_broker[1], keepalive=1) as pub:
        pub.publish(f"livelab/{lab}/pub-01/telemetry", _payload(0))
        pub.idle(8)
        assert pub.connected
        assert pub.reconnects == 0
        pub.publish(f"livelab/{lab}/pub-01/telemetry", _payload(1))
        assert pub.wait_all(timeout=10)
        assert pub.reconnects == 0
    assert subscriber.settle(2) == 2


def test_poll_reads_acknowledgements_without_publishing(mqtt_broker: tuple[str, int]) -> None:
    with Publisher(host=mqtt_broker[0], port=mqtt_broker[1]) as pub:
        pub.publish("livelab/tpoll/pub-01/telemetry", _payload(0))

        def acked() -> bool:
            pub.poll()
            return pub.acknowledged == 1

        wait_for(acked, timeout=10, what="the PUBACK")
        assert pub.outstanding == 0


@pytest.fixture
def proxy(mqtt_broker: tuple[str, int]) -> Iterator[DroppingProxy]:
    p = DroppingProxy(mqtt_broker)
    yield p
    p.close()


def test_reconnects_after_a_dropped_connection_and_loses_nothing(
    lab: str, subscriber: Subscriber, proxy: DroppingProxy, caplog: pytest.LogCaptureFixture
) -> None:
    n = 20_000
    topic = f"livelab/{lab}/pub-01/telemetry"
    caplog.set_level(logging.INFO, logger="simulators.publisher")
    with Publisher(port=proxy.port, qos=1) as pub:
        for i in range(n):
            if i == n // 2:
                proxy.cut()  # with up to max_inflight messages in flight
            pub.publish(topic, _payload(i))
        assert pub.wait_all(timeout=60)
        assert pub.reconnects == 1
        assert (pub.sent, pub.acknowledged, pub.failed) == (n, n, 0)
    assert proxy.accepted == 2
    wait_for(lambda: subscriber.payloads() == {_payload(i) for i in range(n)}, timeout=30)
    assert subscriber.count() >= n  # at least once: a re-sent message may arrive twice
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "lost the connection" in warnings[0].getMessage()
    assert any("reconnected to MQTT broker" in r.getMessage() for r in caplog.records)


def test_qos0_messages_published_while_disconnected_are_dropped_not_waited_for(
    lab: str, proxy: DroppingProxy
) -> None:
    pub = Publisher(port=proxy.port, qos=0)
    pub.connect()
    pub.publish(f"livelab/{lab}/pub-01/telemetry", _payload(0))
    proxy.stop_accepting()  # reconnect attempts are refused from now on
    proxy.cut()

    def noticed() -> bool:
        pub.poll()
        return not pub.connected

    wait_for(noticed, timeout=10, what="the publisher to notice the cut")
    for i in range(1, 11):
        pub.publish(f"livelab/{lab}/pub-01/telemetry", _payload(i))
    assert pub.sent == 11
    assert pub.dropped == 10
    assert pub.outstanding == 0
    pub.close(timeout=1)  # nothing outstanding: no PublishIncomplete


def test_unreachable_broker_raises_broker_unreachable() -> None:
    port = free_port()
    with pytest.raises(BrokerUnreachable, match=f"127.0.0.1:{port}"), Publisher(port=port):
        pass
    pub = Publisher(host="broker.invalid", port=1883)
    with pytest.raises(BrokerUnreachable, match=r"broker\.invalid:1883"):
        pub.connect()


def test_a_server_that_never_sends_connack_is_unreachable() -> None:
    server = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    try:
        pub = Publisher(port=server.getsockname()[1], connect_timeout=0.5)
        with pytest.raises(BrokerUnreachable, match=r"no CONNACK within 0\.5 s"):
            pub.connect()
    finally:
        server.close()


def test_broker_restart_reconnect_in_idle_loses_nothing(
    private_broker: tuple[str, int, Any], lab: str
) -> None:
    host, port, restart = private_broker
    sub = Subscriber(host, port, lab, client_id=f"test-sub-{lab}")
    topic = f"livelab/{lab}/pub-01/telemetry"
    try:
        with Publisher(host=host, port=port) as pub:
            for i in range(3000):
                pub.publish(topic, _payload(i))
            restart()  # with messages in flight, perhaps

            def back() -> bool:
                pub.idle(0.2)  # reconnects happen here, not only in publish
                return pub.connected

            wait_for(back, timeout=30, what="the publisher to reconnect")
            assert pub.reconnects == 1
            for i in range(3000, 6000):
                pub.publish(topic, _payload(i))
            assert pub.wait_all(timeout=60)
            assert pub.failed == 0
        expected = {_payload(i) for i in range(6000)}
        wait_for(lambda: sub.payloads() == expected, timeout=30, what="every message")
    finally:
        sub.close()
