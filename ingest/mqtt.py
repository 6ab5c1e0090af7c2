"""The worker's MQTT connection: paho-mqtt as the protocol engine, driven by our own thread.

paho's own network thread (``loop_start``) was the worker's bottleneck: a py-spy profile of a
worker draining single-reading messages showed that thread busy all the time while the writer
waited on its queue, because paho handles one packet per ``select()`` wake-up, reads each packet
with three ``recv()`` calls (type byte, length, body), and writes each PUBACK with a ``send()``
of its own after a wake-up byte on a socketpair. `Link` keeps paho for everything MQTT (CONNECT
with the persistent session, SUBSCRIBE, keepalive, packet decoding, callbacks) and changes only
how bytes move:

- **reads**: one ``recv()`` of up to `READ_SIZE` bytes per wake-up; paho's small reads are
  served from that buffer (`_BufferedClient._sock_recv`), and every complete packet in it is
  handled before the next ``select()``. The messages of one wake-up reach the worker as one
  list (one queue operation, not one per message), all stamped with that wake-up's time.
- **acks**: the writer hands over the packet ids of a committed batch (`ack`); this thread
  writes all their PUBACKs as one packet buffer, i.e. one ``send()``.
- **PUBLISH decoding**: paho builds a `Properties` object (a dict of every MQTT 5 property
  name), an `MQTTMessage` and an `MQTTMessageInfo` with its own `threading.Condition` for each
  incoming message, and matches its topic against callback filters: in the profile about two
  thirds of this thread's time. `_BufferedClient._handle_publish` decodes the PUBLISH packet's
  few fields itself (flags, topic, packet id, payload; the properties are skipped: the worker
  asks for none) into an `Inbound` tuple.
- **backpressure**: while the worker says it is full (`Handler.room`), the socket is not read,
  so TCP pushes back to the broker; keepalive continues.

Acks are bound to their connection: each connection has a generation number, and a batch's
acks for an older generation are dropped (the broker redelivers those messages).

This relies on paho internals, which is why pyproject pins paho-mqtt to one minor version and
tests/ingest/test_mqtt_link.py checks them, so that a paho upgrade that changes them fails
loudly: ``Client._sock_recv`` (the socket read paho's packet reader calls),
``Client._handle_publish`` and ``Client._in_packet`` (how paho dispatches a complete PUBLISH),
and ``Client._packet_queue`` (how paho queues an outgoing packet).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

log = logging.getLogger("livelab.ingest.mqtt")

READ_SIZE = 256 * 1024  # bytes read per wake-up at most
MISC_INTERVAL = 1.0  # seconds between paho's keepalive checks (loop_misc)
_PUBACK = struct.Struct("!BBH")  # MQTT 5 PUBACK, success, no properties: 0x40, 2, packet id
_PUBACK_COMMAND = 0x40


class Inbound(NamedTuple):
    """One PUBLISH as it came off the wire."""

    topic: bytes
    payload: bytes
    mid: int  # packet id (0 for QoS 0)
    qos: int
    dup: bool


class Handler(Protocol):
    """What the link calls, all from its own thread."""

    def room(self) -> bool:
        """False while the worker cannot take more messages (the socket is then not read)."""

    def deliver(self, messages: list[Inbound], received: float) -> None:
        """Messages of one wake-up, in arrival order; `received` is time.time() at the read."""


class _BufferedClient(mqtt.Client):
    """paho's client reading from a buffer that `Link` fills, instead of from the socket."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = bytearray()
        self._rpos = 0
        self._rerr: BaseException | None = None  # what the last socket read raised, if anything
        self._reof = False
        self.inbound: list[Inbound] = []  # PUBLISHes decoded since the link last took them

    def _handle_publish(self) -> MQTTErrorCode:
        packet = self._in_packet
        command = packet["command"]
        qos = (command & 0x06) >> 1
        if qos > 1:  # never asked for (the worker subscribes at QoS 1): paho's own handling
            return super()._handle_publish()
        body = bytes(packet["packet"])
        end = 2 + ((body[0] << 8) | body[1])
        topic = body[2:end]
        mid = 0
        if qos:
            mid = (body[end] << 8) | body[end + 1]
            end += 2
        if self._protocol == mqtt.MQTTv5:  # skip the properties: a variable byte integer length
            length, shift = 0, 0
            while True:
                byte = body[end]
                end += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
            end += length
        self.inbound.append(Inbound(topic, body[end:], mid, qos, bool(command & 0x08)))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _sock_recv(self, bufsize: int) -> bytes:
        available = len(self._rbuf) - self._rpos
        if available <= 0:
            if self._rerr is not None:
                err, self._rerr = self._rerr, None
                raise err
            if self._reof:
                self._reof = False
                return b""  # paho: connection lost
            raise BlockingIOError  # paho: MQTT_ERR_AGAIN, keeps its partial packet
        end = self._rpos + min(bufsize, available)
        chunk = bytes(self._rbuf[self._rpos : end])
        self._rpos = end
        if self._rpos == len(self._rbuf):
            self._rbuf.clear()
            self._rpos = 0
        return chunk

    def fill(self) -> int:
        """Read what the socket has (up to READ_SIZE); returns the bytes now buffered."""
        sock = self._sock
        if sock is None:
            return 0
        try:
            data = sock.recv(READ_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return len(self._rbuf) - self._rpos
        except OSError as exc:
            self._rerr = exc
            return 0
        if not data:
            self._reof = True
        else:
            self._rbuf += data
        return len(self._rbuf) - self._rpos

    def buffered(self) -> bool:
        return len(self._rbuf) > self._rpos or self._reof or self._rerr is not None

    def reset_buffer(self) -> None:
        self._rbuf.clear()
        self._rpos = 0
        self._rerr = None
        self._reof = False


class Link:
    """One MQTT connection with its own network thread. Create, set callbacks, `start()`."""

    def __init__(
        self,
        handler: Handler,
        *,
        client_id: str,
        host: str,
        port: int,
        keepalive: int,
        connect_properties: Any,
        credentials: tuple[str, str | None] | None = None,
        tls: Callable[[mqtt.Client], None] | None = None,
    ) -> None:
        self._handler = handler
        self.client = _BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if credentials is not None:
            self.client.username_pw_set(*credentials)
        if tls is not None:
            tls(self.client)
        self._connect_args = dict(
            host=host, port=port, keepalive=keepalive, clean_start=False,
            properties=connect_properties,
        )  # fmt: skip
        self.generation = 0  # +1 at every connect and disconnect: acks carry it
        self._acks: deque[tuple[int, list[int]]] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected = False
        self.acked = 0  # PUBACKs written
        self.skipped = 0  # acks dropped: their connection had ended

    # -- called from other threads ----------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ingest-mqtt", daemon=True)
        self._thread.start()

    def ack(self, generation: int, mids: Iterable[int]) -> None:
        """Acknowledge these QoS 1 messages, if their connection (`generation`) still exists."""
        mids = list(mids)
        if mids:
            self._acks.append((generation, mids))
            self._wake()

    def stop(self, timeout: float = 10.0) -> None:
        """Send what acks are pending, DISCONNECT (the session stays), end the thread."""
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    # -- the network thread ------------------------------------------------------------------

    def _run(self) -> None:
        client = self.client
        client.connect_async(**self._connect_args)  # type: ignore[arg-type]
        delay = 0.0
        next_misc = 0.0
        while not self._stop.is_set():
            if client.socket() is None:
                if delay and self._stop.wait(delay):
                    break
                delay = min(max(2 * delay, 1.0), 30.0)
                if not self._connect():
                    continue
            sock = client.socket()
            if sock is None:
                continue
            reading = self._handler.room()
            rlist: list[Any] = [self._wake_r, sock] if reading else [self._wake_r]
            wlist: list[Any] = [sock] if client.want_write() else []
            timeout = 0.0 if reading and client.buffered() else 0.25
            try:
                readable, writable, _ = select.select(rlist, wlist, [], timeout)
            except (OSError, ValueError):  # the socket was closed under us
                readable, writable = [], []
            if self._wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            if reading and (sock in readable or client.buffered()):
                self._read()
            if client.socket() is not None:
                self._send_acks()
                if writable or client.want_write():
                    client.loop_write()
            now = time.monotonic()
            if now >= next_misc:
                next_misc = now + MISC_INTERVAL
                client.loop_misc()  # keepalive: PINGREQ when due, drops a dead connection
            if self._connected:
                delay = 0.0
        self._send_acks()
        with contextlib.suppress(Exception):
            client.disconnect()
            client.loop_write()
        client.reset_buffer()

    def _connect(self) -> bool:
        client = self.client
        client.reset_buffer()
        try:
            client.reconnect()
        except (OSError, ssl.SSLError) as exc:
            log.warning("cannot reach the MQTT broker (%s); retrying", exc)
            return False
        return True

    def _read(self) -> None:
        client = self.client
        received = time.time()
        client.fill()
        # Every complete packet in the buffer (a partial one stays in paho's state), then the
        # messages go to the worker at once.
        while client.buffered() and client.socket() is not None:
            rc = client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            if not self._handler.room() and client.inbound:
                break
        if client.inbound:
            batch, client.inbound = client.inbound, []
            self._handler.deliver(batch, received)

    def _send_acks(self) -> None:
        if not self._acks:
            return
        current = self.generation
        mids: list[int] = []
        while self._acks:
            generation, batch = self._acks.popleft()
            if generation == current:
                mids.extend(batch)
            else:
                self.skipped += len(batch)
        if mids and self.client.socket() is not None:
            pack = _PUBACK.pack
            packet = b"".join([pack(_PUBACK_COMMAND, 2, mid) for mid in mids])
            # One buffer for all of them: paho writes it like any packet of its own, in order
            # with anything it has queued (PINGREQ), so the stream stays well formed.
            self.client._packet_queue(_PUBACK_COMMAND, packet, 0, 0)
            self.acked += len(mids)

    def note_connected(self, connected: bool) -> None:
        """Called by the worker's on_connect/on_disconnect (in this thread)."""
        self.generation += 1
        self._connected = connected
