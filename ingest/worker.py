"""The ingest worker: MQTT in, TimescaleDB out, acknowledge only what is committed.

Threads:
- paho's network thread runs `_on_message`, which only stamps the message with its receive time
  and the current connection's generation and puts it on a bounded queue. A full queue blocks
  that thread, so the worker stops reading from the broker (backpressure); nothing is dropped.
  For QoS 1 the broker's own flow control (MQTT 5 Receive Maximum) bounds what is in flight.
- the writer thread takes batches off the queue, parses them (`ingest.parse`), stores readings
  and rejections in one transaction (`ingest.store`), and only then acknowledges each QoS 1
  message (paho ``manual_ack``). A worker that dies before that gets the messages again from
  its persistent session, and the (series, time) key makes the second store change nothing.

Acks carry the generation of the connection a message came in on: after a reconnect the broker
redelivers what was not acknowledged, with packet ids that belong to the new connection, so an
ack for an old message must not be sent (see MQTT 5 section 4.4, message delivery retry).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.errors import StorageRefused, StorageUnavailable
from ingest.metrics import Metrics, serve_http
from ingest.parse import Parsed, Rejection, parse_message
from ingest.settings import Settings
from ingest.store import RejectionRow, Store
from schemas.migrate import MigrationError, migrate
from schemas.names import TopicError, parse_topic

log = logging.getLogger("livelab.ingest")


@dataclass(slots=True)
class Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received_at: datetime
    generation: int
    parsed: Parsed | None = None
    unstorable: bool = False  # refused by the database even as a rejection: never acked


class Worker:
    """One ingest worker. `start()` returns once it runs; `stop()` finishes queued work."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self._limits = settings.limits
        self._queue: queue.Queue[Incoming] = queue.Queue(
            maxsize=max(2 * settings.ingest_receive_maximum, settings.ingest_batch_messages)
        )
        self._store = Store(settings.database_url)
        self._generation = 0
        self._gen_lock = threading.Lock()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._stopping = threading.Event()
        self._abandon = threading.Event()
        self.failed = threading.Event()  # set when the writer thread died
        self._writer: threading.Thread | None = None
        self._http: ThreadingHTTPServer | None = None
        self._client = self._make_client()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        s = self.settings
        if s.migrate:
            self._migrate()
        if s.ingest_http_port:
            self._http = serve_http(
                s.ingest_http_host, s.ingest_http_port, self.metrics, self.ready
            )
            log.info("metrics and health on http://%s:%d/metrics", *self._http.server_address[:2])
        self._writer = threading.Thread(target=self._write_loop, name="ingest-writer", daemon=True)
        self._writer.start()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.ingest_session_expiry
        props.ReceiveMaximum = s.ingest_receive_maximum
        log.info(
            "connecting to MQTT broker %s:%d as %r (persistent session, %d s expiry)",
            s.mqtt_host,
            s.mqtt_port,
            s.ingest_client_id,
            s.ingest_session_expiry,
        )
        # connect_async + loop_start: paho keeps retrying the first connection and reconnects
        # after every loss, with the same client id and clean_start=False (session resumed).
        self._client.connect_async(
            s.mqtt_host,
            s.mqtt_port,
            keepalive=s.mqtt_keepalive,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()

    def stop(self, grace: float | None = None) -> None:
        """Finish what is queued (up to `grace` seconds), then disconnect."""
        grace = self.settings.ingest_shutdown_grace if grace is None else grace
        log.info("stopping: finishing %d queued messages", self._queue.qsize())
        self._stopping.set()
        if self._writer is not None:
            self._writer.join(grace)
            if self._writer.is_alive():
                log.warning("shutdown grace over; unacknowledged messages will be redelivered")
                self._abandon.set()
                self._writer.join(10)
        self._client.disconnect()
        self._client.loop_stop()
        self._store.close()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        log.info("stopped")

    def wait_ready(self, timeout: float) -> bool:
        """Wait until connected and subscribed (used by tests and the demo)."""
        return self._subscribed.wait(timeout)

    def ready(self) -> tuple[bool, str]:
        if self.failed.is_set():
            return False, "the writer thread failed; see the log"
        if not self._connected.is_set():
            return False, "not connected to the MQTT broker"
        if not self._store.ping():
            return False, "database unreachable"
        return True, "connected to the broker and the database"

    def _migrate(self) -> None:
        delay = 0.5
        while True:
            try:
                applied = migrate(self.settings.database_url)
            except MigrationError as exc:
                if "cannot connect" not in str(exc) or self._stopping.is_set():
                    raise
                log.warning("waiting for the database (retry in %.0f s): %s", delay, exc)
                time.sleep(delay)
                delay = min(delay * 2, 30)
                continue
            if applied:
                log.info("applied migrations %s", applied)
            return

    # -- MQTT (paho's thread) ----------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.ingest_client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if s.mqtt_username:
            password = s.mqtt_password.get_secret_value() if s.mqtt_password else None
            client.username_pw_set(s.mqtt_username, password)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        with self._gen_lock:
            self._generation += 1
        self.metrics.connects.inc()
        self.metrics.connected.set(1)
        self._connected.set()
        log.info(
            "connected to the broker (%s session); subscribing to %s",
            "resumed" if flags.session_present else "new",
            ", ".join(self.settings.topic_filters),
        )
        # Retain Handling 2: no retained messages on subscribe. A retained message was stored
        # when it was published; replaying it on every reconnect would store a form-1 reading
        # again, stamped with the new receive time (MQTT 5 section 3.8.3.1).
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
        client.subscribe([(f, options) for f in self.settings.topic_filters])

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            log.error("broker refused the subscription: %s", ", ".join(failed))
            return
        self._subscribed.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._gen_lock:
            self._generation += 1
        self._connected.clear()
        self._subscribed.clear()
        self.metrics.disconnects.inc()
        self.metrics.connected.set(0)
        if self._stopping.is_set():
            log.info("disconnected from the broker")
        else:
            log.warning("lost the broker connection (%s); reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        received_at = datetime.now(UTC)
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = msg._topic.decode("utf-8", "replace")
        # Blocks while the queue is full: backpressure, never a drop.
        self._queue.put(
            Incoming(topic, bytes(msg.payload), msg.mid, msg.qos, received_at, self._generation)
        )

    # -- writer thread -----------------------------------------------------------------------

    def _write_loop(self) -> None:
        try:
            while not self._abandon.is_set():
                batch = self._collect()
                if batch:
                    self._process(batch)
                elif self._stopping.is_set():
                    return
        except Exception:
            # Nothing more will be stored or acknowledged by this process: say so, turn /ready
            # red and let `livelab-ingest` exit non-zero so a supervisor restarts it (the broker
            # redelivers everything un-acknowledged).
            log.critical("the writer thread failed; the worker must be restarted", exc_info=True)
            self.failed.set()

    def _collect(self) -> list[Incoming]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        limit = self.settings.ingest_batch_messages
        deadline = time.monotonic() + self.settings.ingest_batch_linger_ms / 1000
        while len(batch) < limit:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _process(self, batch: list[Incoming]) -> None:
        m = self.metrics
        m.queue_depth.set(self._queue.qsize())
        for msg in batch:
            msg.parsed = self._parse(msg)
        if not self._store_batch(batch):
            return  # shutting down with the database away: the broker will redeliver
        for msg in batch:
            assert msg.parsed is not None
            rejected = msg.parsed.rejection is not None
            outcome = ("partial" if msg.parsed.readings else "rejected") if rejected else "stored"
            m.messages.labels(outcome).inc()
        self._ack(batch)

    def _parse(self, msg: Incoming) -> Parsed:
        try:
            return parse_message(msg.topic, msg.payload, msg.received_at, self._limits)
        except Exception as exc:
            # parse_message turns every problem with the input into a rejection; getting here
            # is a bug. Record the message as rejected (so it is not lost and does not crash
            # the worker again on every redelivery) and say so loudly.
            log.exception("bug: parsing a message on %s raised", msg.topic)
            reason = (
                f"internal error while reading the message ({type(exc).__name__}: {exc}); "
                "please report it to the livelab operators"
            )
            return Parsed(rejection=Rejection(*_lab_device(msg.topic), msg.topic, reason, 0))

    def _store_batch(self, batch: list[Incoming]) -> bool:
        """Store `batch` in one transaction; retry while the database is away."""
        readings = [r for msg in batch if msg.parsed for r in msg.parsed.readings]
        rows = [
            self._row(msg, msg.parsed.rejection)
            for msg in batch
            if msg.parsed and msg.parsed.rejection
        ]
        units = {k: v for msg in batch if msg.parsed for k, v in msg.parsed.units.items()}
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                result = self._store.write(readings, rows, units)
            except StorageUnavailable as exc:
                attempt += 1
                self.metrics.db_retries.inc()
                delay = min(30.0, 0.2 * 2**attempt) * random.uniform(0.5, 1.0)
                log.warning("%s; retry %d in %.1f s", exc, attempt, delay)
                if self._abandon.wait(delay):
                    return False
                continue
            except StorageRefused as exc:
                self.metrics.db_refused.inc()
                return self._store_refused(batch, exc)
            if attempt:
                log.info("database is back after %d retries", attempt)
            self.metrics.batches.inc()
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
            self.metrics.readings.labels("stored").inc(result.inserted)
            self.metrics.readings.labels("duplicate").inc(result.duplicates)
            self.metrics.rejections.inc(result.rejections)
            return True

    def _store_refused(self, batch: list[Incoming], exc: StorageRefused) -> bool:
        """The database refused the batch: store message by message; record what still fails."""
        if len(batch) > 1:
            log.warning("%s; storing the %d messages one by one", exc, len(batch))
            return all(self._store_batch([msg]) for msg in batch)
        msg = batch[0]
        parsed = msg.parsed
        assert parsed is not None
        log.error("message on %s cannot be stored: %s", msg.topic, exc)
        if not parsed.readings:
            # Only its rejection record was in the batch, and even that was refused. Leave it
            # unacknowledged: the broker keeps it and redelivers it after the next reconnect;
            # the log line above says why.
            msg.unstorable = True
            return True
        count = len(parsed.readings) + (parsed.rejection.rejected_count if parsed.rejection else 0)
        reason = f"could not be stored: {exc}"
        msg.parsed = Parsed(rejection=Rejection(*_lab_device(msg.topic), msg.topic, reason, count))
        return self._store_batch([msg])

    def _row(self, msg: Incoming, rejection: Rejection) -> RejectionRow:
        keep = self.settings.ingest_rejection_payload_bytes
        return RejectionRow(
            received_at=msg.received_at,
            lab=rejection.lab,
            device=rejection.device,
            topic=msg.topic,
            reason=rejection.reason,
            rejected_count=rejection.rejected_count,
            payload=msg.payload[:keep],
            payload_size=len(msg.payload),
        )

    def _ack(self, batch: list[Incoming]) -> None:
        with self._gen_lock:
            current = self._generation
            for msg in batch:
                if msg.qos == 0 or msg.unstorable:
                    continue
                if msg.generation != current:
                    self.metrics.acks_skipped.inc()
                    continue
                self._client.ack(msg.mid, msg.qos)
                self.metrics.acks.inc()


def _lab_device(topic: str) -> tuple[str | None, str | None]:
    """The lab and device a topic names, where they are valid (for a rejection record)."""
    try:
        where = parse_topic(topic)
    except TopicError as exc:
        return exc.lab, exc.device
    return where.lab, where.device
