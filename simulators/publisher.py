"""`Publisher`: a paho-mqtt 2.x client that publishes as fast as the broker acknowledges.

    with Publisher(host="127.0.0.1", port=1883, qos=1) as pub:
        pub.publish("livelab/oceanhamnen/aq-01/telemetry", b'{"no2": 17.4}')
    # leaving the block waits until every message is acknowledged (QoS 1) or written (QoS 0)

Flow control: at most `max_inflight` messages are outstanding; `publish` blocks until the
broker acknowledges older ones. paho's own in-flight window (default 20) would cap QoS 1 at
20 messages per round trip, and any paho window has a cost: on every PUBACK paho scans all
its outgoing messages for a queued one to send (``Client._update_inflight``, O(window) per
ack; measured on the local Mosquitto: window 1000 -> 7k msg/s, 100 -> 14k msg/s). So paho's
window is switched off (0 = unlimited) and ours bounds the messages in flight instead:
~16k msg/s at QoS 1 with a window of 1000. paho's queue is unbounded too
(``max_queued_messages=0``) for the same reason.

Reconnects: paho's network thread (``loop_start``) reconnects on its own with a backoff
(`reconnect_delay_set`), and after reconnecting it re-sends every QoS 1 message not yet
acknowledged (``_messages_reconnect_reset_out``, with DUP set). Messages published while the
connection is down wait in paho's queue. So a broker restart costs time, not messages; ingest
stores duplicates once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from types import TracebackType
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from simulators.errors import BrokerUnreachable, PublishIncomplete

log = logging.getLogger(__name__)

MqttVersion = Literal["3.1.1", "5"]
_PROTOCOLS = {"3.1.1": mqtt.MQTTv311, "5": mqtt.MQTTv5}


class Publisher:
    """Publishes messages to one MQTT broker; a context manager that connects and drains."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        qos: int = 1,
        mqtt_version: MqttVersion = "3.1.1",
        client_id: str | None = None,
        max_inflight: int = 1000,
        connect_timeout: float = 10.0,
        keepalive: int = 30,
    ) -> None:
        if qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, not {qos!r}")
        if mqtt_version not in _PROTOCOLS:
            raise ValueError(f"mqtt_version must be '3.1.1' or '5', not {mqtt_version!r}")
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be at least 1, not {max_inflight}")
        if not 0 < port < 65536:
            raise ValueError(f"port must be 1..65535, not {port}")
        self.host = host
        self.port = port
        self.qos = qos
        self.max_inflight = max_inflight
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.client_id = client_id or f"livelab-sim-{os.getpid()}-{secrets.token_hex(3)}"

        self._cond = threading.Condition()
        self._sent = 0  # handed to paho
        self._done = 0  # acknowledged (QoS 1) or written to the socket (QoS 0)
        self._failed = 0  # PUBACK with a failure reason code (MQTT 5)
        self._connected = threading.Event()
        self._connect_error: str | None = None
        self._closing = False
        self.reconnects = 0

        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=_PROTOCOLS[mqtt_version],
        )
        client.max_inflight_messages_set(0)  # our window bounds it; see the module doc
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.connect_timeout = connect_timeout
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client

    # -- paho callbacks: they run on paho's network thread and only update counters --

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            self._connect_error = f"connection refused: {reason}"
        else:
            if self.reconnects:
                log.info("reconnected to MQTT broker at %s:%s", self.host, self.port)
            self._connect_error = None
        self._connected.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if self._closing:
            return
        self.reconnects += 1
        self._connected.clear()
        log.warning(
            "lost the connection to MQTT broker at %s:%s (%s); reconnecting, %d message(s) "
            "will be re-sent",
            self.host,
            self.port,
            reason,
            self.outstanding,
        )

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        with self._cond:
            self._done += 1
            if reason.is_failure:
                self._failed += 1
            self._cond.notify_all()

    # -- public API --

    @property
    def sent(self) -> int:
        """Messages handed to the client so far."""
        return self._sent

    @property
    def acknowledged(self) -> int:
        """Messages the broker acknowledged (QoS 1) or that were written out (QoS 0)."""
        return self._done

    @property
    def failed(self) -> int:
        """Messages the broker refused (an MQTT 5 PUBACK with a failure reason)."""
        return self._failed

    @property
    def outstanding(self) -> int:
        return self._sent - self._done

    def connect(self) -> None:
        """Connect and wait for the CONNACK; raise `BrokerUnreachable` if that fails."""
        try:
            self._client.connect(self.host, self.port, keepalive=self.keepalive)
        except (OSError, ValueError) as exc:  # refused, unknown host, timeout
            raise BrokerUnreachable(self.host, self.port, str(exc) or type(exc).__name__) from exc
        self._client.loop_start()
        if not self._connected.wait(self.connect_timeout) or self._connect_error:
            reason = self._connect_error or f"no CONNACK within {self.connect_timeout:g} s"
            self._stop_loop()
            raise BrokerUnreachable(self.host, self.port, reason)
        log.debug("connected to MQTT broker at %s:%s as %s", self.host, self.port, self.client_id)

    def publish(self, topic: str, payload: bytes) -> None:
        """Queue one message; blocks while `max_inflight` messages await acknowledgement."""
        with self._cond:
            while self._sent - self._done >= self.max_inflight:
                self._cond.wait(0.5)
            self._sent += 1
        # Not under our lock: paho may call _on_publish (which takes it) before returning.
        info = self._client.publish(topic, payload, qos=self.qos)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # NO_CONN: queued, sent after the reconnect. Anything else is a bug of ours.
            with self._cond:
                self._sent -= 1
            raise RuntimeError(f"publish to {topic!r} failed: {mqtt.error_string(info.rc)}")

    def wait_all(self, timeout: float | None = None) -> bool:
        """Wait until nothing is outstanding; False if `timeout` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._sent > self._done:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.5 if left is None else min(left, 0.5))
        return True

    def close(self, timeout: float | None = 30.0) -> None:
        """Wait for outstanding messages (up to `timeout` s), then disconnect.

        Raises `PublishIncomplete` when messages stayed unacknowledged or were refused.
        """
        drained = self.wait_all(timeout)
        self._closing = True
        self._client.disconnect()
        self._stop_loop()
        if not drained or self._failed:
            raise PublishIncomplete(self.outstanding, self._failed, self.host, self.port)

    def _stop_loop(self) -> None:
        self._closing = True
        self._client.loop_stop()

    def __enter__(self) -> Publisher:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            # Already failing: don't hide the error behind a drain timeout.
            with contextlib.suppress(PublishIncomplete):
                self.close(timeout=2.0)
