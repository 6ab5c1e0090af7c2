"""`Publisher`: a single-threaded paho-mqtt 2.x client that publishes as fast as the broker
acknowledges, through paho's public API only.

    with Publisher(host="127.0.0.1", port=1883, qos=1) as pub:
        pub.publish("livelab/oceanhamnen/aq-01/telemetry", b'{"no2": 17.4}')
        pub.idle(5.0)  # between messages: keeps the connection alive, reads acknowledgements
    # leaving the block waits until every message is acknowledged (QoS 1) or written (QoS 0)

No network thread: paho is driven from `publish`, `poll`, `idle` and `wait_all`, so
``client.publish()`` writes straight to the socket and PUBACKs are read every `POLL_EVERY`
publishes (``loop_start`` hands every packet to a thread: 21-27k msg/s here against ~40k).
Flow control: at most `max_inflight` outstanding; paho's own window is off, as paho scans it
on every PUBACK. A lost connection is retried with tenacity's backoff, one warning per outage;
paho re-sends unacknowledged QoS 1 messages, QoS 0 ones not yet written are lost (`dropped`).
The credential and TLS CA: ``LIVELAB_MQTT_USERNAME``, ``_PASSWORD``, ``LIVELAB_MQTT_TLS_CA``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import select
import threading
import time
from collections import deque
from typing import Any, Literal, Protocol

import paho.mqtt.client as mqtt
import tenacity
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from simulators.errors import BrokerUnreachable, PublishIncomplete

log = logging.getLogger(__name__)

MqttVersion = Literal["3.1.1", "5"]
_PROTOCOLS = {"3.1.1": mqtt.MQTTv311, "5": mqtt.MQTTv5}

POLL_EVERY = 64  # publishes between reads of the acknowledgements...
POLL_INTERVAL = 0.05  # ...or seconds, whichever comes first (slow publishers get acks too)
STOP_CHECK = 0.2  # `idle` looks at its stop event at least this often (seconds)
#: The delay before each reconnect attempt of an outage: 1 s, 2 s, 4 s, ... 30 s, +0-0.5 s.
RECONNECT_WAIT = tenacity.wait_exponential_jitter(initial=1, max=30, jitter=0.5)
_MAX_MID = 65535  # paho's message ids: more QoS 1 messages in flight would collide
_NOT_WRITTEN = (MQTTErrorCode.MQTT_ERR_NO_CONN, MQTTErrorCode.MQTT_ERR_CONN_LOST)
_monotonic = time.monotonic
_NEVER = threading.Event()  # `idle` without a stop flag waits on this


class StopFlag(Protocol):
    """A `threading.Event` or a `multiprocessing` one."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


def _attempts() -> tenacity.RetryCallState:
    """A fresh count of attempts, as tenacity's wait strategies read it (attempt_number)."""
    return tenacity.RetryCallState(tenacity.Retrying(), None, (), {})


class Publisher:
    """Publishes messages to one MQTT broker from one thread; a context manager that connects
    and drains. Counts: `sent` (handed to paho), `acknowledged` (QoS 1, or written out for
    QoS 0), `failed` (refused by an MQTT 5 broker), `dropped` (QoS 0 lost with the
    connection), `reconnects` (connections lost). Not thread-safe."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 1883, qos: int = 1,
        mqtt_version: MqttVersion = "3.1.1", max_inflight: int = 1000,
        connect_timeout: float = 10.0, keepalive: int = 30,
    ) -> None:  # fmt: skip
        for bad, what in (
            (qos not in (0, 1), f"qos must be 0 or 1, not {qos!r}"),
            (mqtt_version not in _PROTOCOLS, f"mqtt_version must be 3.1.1 or 5: {mqtt_version!r}"),
            (not 1 <= max_inflight <= _MAX_MID, f"max_inflight: 1..{_MAX_MID}, not {max_inflight}"),
            (not 0 < port < 65536, f"port must be 1..65535, not {port}"),
            (not connect_timeout > 0, f"connect_timeout must be positive, not {connect_timeout!r}"),
            (keepalive < 0, f"keepalive must be 0 (off) or positive, not {keepalive!r}"),
        ):  # fmt: skip
            if bad:
                raise ValueError(what)
        self.host, self.port, self.qos, self.keepalive = host, port, qos, keepalive
        self.max_inflight, self.connect_timeout = max_inflight, connect_timeout
        self.client_id = f"livelab-sim-{os.getpid()}-{secrets.token_hex(3)}"
        self.sent = self.acknowledged = self.failed = self.dropped = self.reconnects = 0
        self.connected = False  # CONNACK received on the current connection
        self._qos0: deque[mqtt.MQTTMessageInfo] = deque()  # QoS 0 waiting in paho's buffer
        self._poll_at = 0.0  # publish services the network at this time at the latest
        self._connect_error: str | None = None
        self._was_connected = False  # connect() succeeded once: losses are reconnected
        self._down_since: float | None = None  # monotonic time the current outage began
        self._retry_at = 0.0
        self._attempts = _attempts()  # of the current outage, for RECONNECT_WAIT
        self._closed = False

        version, protocol = CallbackAPIVersion.VERSION2, _PROTOCOLS[mqtt_version]
        client = mqtt.Client(version, client_id=self.client_id, protocol=protocol)
        client.max_inflight_messages_set(0)  # our window bounds it; see the module doc
        client.max_queued_messages_set(0)
        client.connect_timeout = connect_timeout
        if username := os.environ.get("LIVELAB_MQTT_USERNAME"):
            client.username_pw_set(username, os.environ.get("LIVELAB_MQTT_PASSWORD"))
        if tls_ca := os.environ.get("LIVELAB_MQTT_TLS_CA"):
            client.tls_set(ca_certs=tls_ca)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client

    # -- paho callbacks: called from within our own calls into paho, same thread --

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            self._connect_error = f"connection refused: {reason}"
            log.debug("MQTT broker at %s:%s: %s", self.host, self.port, self._connect_error)
            return
        self.connected = True
        self._connect_error = None
        if self._down_since is not None:
            log.info(
                "reconnected to MQTT broker at %s:%s after %.1f s; %d message(s) outstanding",
                self.host, self.port, _monotonic() - self._down_since, self.outstanding,
            )  # fmt: skip
            self._down_since = None

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self.connected = False
        if not self._closed and self._was_connected and self._down_since is None:
            self._lost(str(reason))

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        self.acknowledged += 1
        if reason.is_failure:
            self.failed += 1

    @property
    def outstanding(self) -> int:
        """Messages neither acknowledged (QoS 1), written out (QoS 0) nor dropped (QoS 0)."""
        return self.sent - self.acknowledged - self.dropped

    def connect(self) -> None:
        """Connect and wait for the CONNACK; raise `BrokerUnreachable` if that fails."""
        client = self._client
        try:
            client.connect(self.host, self.port, keepalive=self.keepalive)
        except (OSError, ValueError) as exc:  # refused, unknown host, timeout: no socket left
            raise BrokerUnreachable(self.host, self.port, str(exc) or type(exc).__name__) from exc
        deadline = _monotonic() + self.connect_timeout
        while not self.connected and self._connect_error is None:
            left = deadline - _monotonic()
            if client.socket() is None:
                self._connect_error = "the broker closed the connection"
            elif left <= 0:
                self._connect_error = f"no CONNACK within {self.connect_timeout:g} s"
            else:
                self._service(min(left, STOP_CHECK))
        if not self.connected:
            self._disconnect()
            raise BrokerUnreachable(self.host, self.port, self._connect_error or "not connected")
        self._was_connected = True
        log.debug("connected to MQTT broker at %s:%s as %s", self.host, self.port, self.client_id)

    def publish(self, topic: str, payload: bytes, qos: int | None = None) -> None:
        """Queue one message at `qos` (None: the default), usually written at once; blocks,
        servicing the network, while `max_inflight` messages are outstanding."""
        if qos is None:
            qos = self.qos
        elif qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, not {qos!r}")
        if self._closed:
            raise RuntimeError("publish on a closed Publisher")
        while self.sent - self.acknowledged - self.dropped >= self.max_inflight:
            self._service(0.05)
        info = self._client.publish(topic, payload, qos)
        if info.rc and info.rc not in _NOT_WRITTEN:
            raise RuntimeError(f"publish to {topic!r} failed: {mqtt.error_string(info.rc)}")
        self.sent += 1  # not written for want of a connection: paho re-sends QoS 1 on reconnect
        if qos == 0 and info.rc:
            self.dropped += 1  # ... but keeps no QoS 0 message for it
        elif qos == 0 and not info.is_published():
            self._qos0.append(info)  # the socket's buffer is full: paho holds the packet
        if not self.sent % POLL_EVERY or _monotonic() >= self._poll_at:
            self._service(0.0)

    def poll(self) -> None:
        """Service the network without blocking (acknowledgements, pings, reconnects)."""
        self._service(0.0)

    def idle(self, seconds: float, stop: StopFlag | None = None) -> bool:
        """Service the network for up to `seconds` (in ``select``, not spinning), returning
        early once `stop` is set: True then, like ``stop.wait(seconds)``."""
        end = _monotonic() + seconds
        while not (stop is not None and stop.is_set()):
            left = end - _monotonic()
            if left <= 0:
                self._service(0.0)
                break
            self._service(min(left, STOP_CHECK), stop)
        return stop is not None and stop.is_set()

    def wait_all(self, timeout: float | None = None) -> bool:
        """Service the network until nothing is outstanding; False if `timeout` s passed first."""
        deadline = _monotonic() + (math.inf if timeout is None else timeout)
        self._service(0.0)
        while self.outstanding > 0:
            if (left := deadline - _monotonic()) <= 0:
                return False
            self._service(min(STOP_CHECK, left))
        return True

    def close(self, timeout: float | None = 30.0) -> None:
        """Wait for outstanding messages (up to `timeout` s), then disconnect; raise
        `PublishIncomplete` when messages stayed unacknowledged or were refused."""
        if self._closed:
            return
        try:
            drained = self.wait_all(timeout)
        finally:
            self._closed = True
            self._disconnect()
        if self.dropped:
            what = "QoS 0 message(s) were lost while the connection was down"
            log.warning("%s:%s: %d %s", self.host, self.port, self.dropped, what)
        if not drained or self.failed:
            raise PublishIncomplete(self.outstanding, self.failed, self.host, self.port)

    def __enter__(self) -> Publisher:
        self.connect()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            # Already failing: don't hide the error behind a drain timeout.
            with contextlib.suppress(PublishIncomplete):
                self.close(timeout=2.0)

    def _service(self, timeout: float, stop: StopFlag | None = None) -> None:
        """One round of network work, waiting up to `timeout` s for the socket."""
        client = self._client
        self._poll_at = _monotonic() + POLL_INTERVAL
        if client.socket() is None and self._was_connected and not self._closed:
            if self._down_since is None:  # closed without paho telling us: still an outage
                self._lost("the connection closed")
            self._reconnect_if_due()
        if (sock := client.socket()) is None:
            if (wait := min(timeout, max(0.0, self._retry_at - _monotonic()))) > 0:
                (stop or _NEVER).wait(wait)
        else:
            if timeout > 0:
                self._wait_socket(sock, timeout)
            client.loop_read()
            if client.want_write():
                client.loop_write()
            client.loop_misc()  # keepalive: PINGREQ when due, drops a connection gone silent
        self._settle_qos0()

    def _wait_socket(self, sock: Any, timeout: float) -> None:
        """Until `sock` is readable (or writable, when paho has bytes to send) or `timeout`."""
        wlist = [sock] if self._client.want_write() else []
        with contextlib.suppress(OSError, ValueError):  # closed under us: the read will tell
            select.select([sock], wlist, [], timeout)

    def _settle_qos0(self) -> None:
        """QoS 0 packets paho held: written (counted by on_publish) or lost at a reconnect."""
        pending = self._qos0
        while pending:
            info = pending[0]
            if info.rc:  # paho's reconnect() discarded it
                self.dropped += 1
            elif not info.is_published():
                break
            pending.popleft()

    def _lost(self, reason: str) -> None:
        now = _monotonic()
        self._down_since = now
        self._attempts = _attempts()
        self._retry_at = now + RECONNECT_WAIT(self._attempts)
        self.reconnects += 1
        log.warning(
            "lost the connection to MQTT broker at %s:%s (%s); reconnecting, %d message(s) "
            "outstanding will be re-sent", self.host, self.port, reason, self.outstanding,
        )  # fmt: skip

    def _reconnect_if_due(self) -> None:
        now = _monotonic()
        if now < self._retry_at:
            return
        self._attempts.attempt_number += 1
        delay = RECONNECT_WAIT(self._attempts)
        self._retry_at = now + delay  # the next attempt, if this one fails at any step
        try:
            self._client.reconnect()  # TCP connect + CONNECT; the CONNACK arrives in a later read
        except (OSError, ValueError) as exc:  # paho keeps no socket after a failed connect
            where = f"{self.host}:{self.port}"
            log.debug("reconnecting to %s failed (%s); next in %.0f s", where, exc, delay)

    def _disconnect(self) -> None:
        client = self._client
        if client.socket() is None:
            return
        client.disconnect()  # written at once; paho closes the socket once it is out
        deadline = _monotonic() + 1.0
        while (sock := client.socket()) is not None and _monotonic() < deadline:
            self._wait_socket(sock, 0.1)
            client.loop_write()
        if (sock := client.socket()) is not None:  # the DISCONNECT could not be written
            sock.close()
