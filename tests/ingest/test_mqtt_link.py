"""`ingest.mqtt.Link` on the real Mosquitto, and the paho internals it relies on.

The link overrides paho's `_sock_recv` and `_handle_publish` and queues PUBACKs with
`_packet_queue`. pyproject pins paho-mqtt to one minor version; these tests fail when paho
changes any of that, so an upgrade is a deliberate change, not a silent breakage.
"""

from __future__ import annotations

import inspect
import secrets
import time
from collections.abc import Iterator
from importlib.metadata import version

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.mqtt import READ_SIZE, Inbound, Link
from tests.helpers import credentials, forget_session, login, wait_for


def test_paho_is_the_version_the_link_was_written_for():
    assert version("paho-mqtt").startswith("2.2."), "re-check ingest/mqtt.py against this paho"


def test_the_paho_internals_the_link_uses_are_there():
    params = lambda f: list(inspect.signature(f).parameters)  # noqa: E731
    assert params(mqtt.Client._sock_recv) == ["self", "bufsize"]
    assert params(mqtt.Client._handle_publish) == ["self"]
    assert params(mqtt.Client._packet_queue)[:5] == ["self", "command", "packet", "mid", "qos"]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    assert {"command", "packet"} <= set(client._in_packet)
    # paho's packet reader dispatches a PUBLISH to _handle_publish, and reads through
    # _sock_recv: both by name, so that a subclass can override them.
    assert "self._handle_publish()" in inspect.getsource(mqtt.Client._packet_handle)
    assert "self._sock_recv(" in inspect.getsource(mqtt.Client._packet_read)


class _Collect:
    def __init__(self) -> None:
        self.got: list[Inbound] = []

    def room(self) -> bool:
        return True

    def deliver(self, messages: list[Inbound], received: float) -> None:
        self.got.extend(messages)


def _link(handler: _Collect, client_id: str, topic: str, broker: tuple[str, int]) -> Link:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 60
    props.ReceiveMaximum = 100
    link = Link(
        handler,
        client_id=client_id,
        host=broker[0],
        port=broker[1],
        keepalive=10,
        connect_properties=props,
        credentials=credentials(),
    )

    def on_connect(client, userdata, flags, reason, properties):
        link.note_connected(True)
        client.subscribe([(topic, SubscribeOptions(qos=1))])

    link.client.on_connect = on_connect
    link.client.on_disconnect = lambda *_: link.note_connected(False)
    return link


@pytest.fixture
def pub(mqtt_broker) -> Iterator[mqtt.Client]:
    """An MQTT 5 publisher with the tests' login."""
    client = login(mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5))
    client.connect(*mqtt_broker)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


def test_publishes_with_properties_and_big_payloads_are_decoded(mqtt_broker, pub):
    topic = f"livelab/t{secrets.token_hex(4)}/dev/telemetry"
    handler = _Collect()
    link = _link(handler, f"test-link-{secrets.token_hex(4)}", topic, mqtt_broker)
    link.start()
    try:
        wait_for(lambda: link.generation > 0, what="connected")
        time.sleep(0.3)  # subscribed
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("k", "v" * 300)]  # properties the link must skip
        props.ContentType = "application/json"
        big = b"x" * (2 * READ_SIZE + 17)  # spans several reads
        sent = [(b"a", 0, None), (b"b", 1, props), (big, 1, None), (b"", 1, props)]
        for payload, qos, p in sent:
            pub.publish(topic, payload, qos=qos, properties=p).wait_for_publish(5)
        wait_for(lambda: len(handler.got) == len(sent), what="every message")
        assert [(m.topic, m.payload, m.qos) for m in handler.got] == [
            (topic.encode(), payload, qos) for payload, qos, _ in sent
        ]
        assert all(m.mid > 0 for m in handler.got if m.qos)
        assert not any(m.dup for m in handler.got)
    finally:
        link.stop()
        forget_session(*mqtt_broker, link.client._client_id.decode())


def test_acked_messages_stay_acked_and_the_rest_come_again_with_dup(mqtt_broker, pub):
    topic = f"livelab/t{secrets.token_hex(4)}/dev/telemetry"
    client_id = f"test-link-{secrets.token_hex(4)}"
    first = _Collect()
    link = _link(first, client_id, topic, mqtt_broker)
    link.start()
    try:
        wait_for(lambda: link.generation > 0, what="connected")
        time.sleep(0.3)
        for i in range(10):
            pub.publish(topic, b"%d" % i, qos=1).wait_for_publish(5)
        wait_for(lambda: len(first.got) == 10, what="ten messages")
        link.ack(link.generation, [m.mid for m in first.got[:6]])  # one send for six PUBACKs
        time.sleep(0.3)
        link.stop()
        again = _Collect()
        link = _link(again, client_id, topic, mqtt_broker)
        link.start()
        wait_for(lambda: len(again.got) == 4, what="the four not acknowledged")
        time.sleep(0.3)
        assert [m.payload for m in again.got] == [b"6", b"7", b"8", b"9"]
        assert all(m.dup for m in again.got)
        link.ack(link.generation - 2, [m.mid for m in again.got])  # an ended connection's
        wait_for(lambda: link.skipped == 4, what="acks of an ended connection dropped")
    finally:
        link.stop()
        forget_session(*mqtt_broker, client_id)
