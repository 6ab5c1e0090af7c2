"""The ingest worker: MQTT in, TimescaleDB out, acknowledge only what is committed.

Threads:
- the MQTT thread (`ingest.mqtt.Link`) drives paho: it reads every complete packet the socket
  has per wake-up and hands that wake-up's messages to the worker as one list (`_deliver`),
  stamped with the receive time and the current connection's generation. While the inbox is
  full it stops reading from the socket (backpressure: TCP pushes back to the broker); nothing
  is dropped. For QoS 1 the broker's own flow control (MQTT 5 Receive Maximum) bounds what is
  in flight.
- the parser thread takes batches from the inbox, leaves out messages of an ended connection
  and parses the rest (`ingest.parse`); up to `PARSED_AHEAD` parsed batches wait for the
  writer, so parsing overlaps with the database's work.
- the writer thread gives redelivered messages their first receive time (`ingest.receipts`),
  stores a batch's readings and rejections in one transaction (`ingest.store`), and only then
  hands the batch's QoS 1 packet ids to the MQTT thread, which writes their PUBACKs in one
  send. A worker that dies before that gets the messages again from its persistent session,
  and the (series, time) key (with receipts for form 1, `ingest.receipts`) makes the second
  store change nothing.

Acks carry the generation of the connection a message came in on: after a reconnect the broker
redelivers what was not acknowledged, with packet ids that belong to the new connection, so an
ack for an old message must not be sent (see MQTT 5 section 4.4, message delivery retry).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential_jitter

from ingest import receipts
from ingest.errors import StorageRefused, StorageUnavailable
from ingest.metrics import Metrics, serve_http
from ingest.mqtt import Inbound, Link
from ingest.parse import Parsed, Rejection, parse_message
from ingest.receipts import PARSED_AHEAD
from ingest.settings import Settings
from ingest.store import Receipt, RejectionRow, Store, Timeouts
from schemas.migrate import MigrationError, migrate
from schemas.names import TopicError, parse_topic

log = logging.getLogger("livelab.ingest")

TRIM_INTERVAL = 300.0  # seconds between two rounds of rejection retention
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Stopped(Exception):
    """A stop was requested before the worker had started (e.g. SIGTERM while waiting)."""


@dataclass(slots=True)
class Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int
    dup: bool  # the broker sent this message before (a redelivery)
    received_at: datetime
    generation: int  # the connection it came on
    arrived: float  # time.monotonic() at receipt, for /ready's progress check
    parsed: Parsed | None = None
    stale: bool = False  # its connection ended before it was stored: left to the redelivery

    def digest(self) -> bytes:
        return receipts.digest(self.topic, self.payload)


class _Inbox:
    """Lists of messages from the MQTT thread, for the writer; `room()` bounds it softly."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._chunks: deque[list[Incoming]] = deque()
        self._count = 0
        self._ready = threading.Condition()

    def __len__(self) -> int:
        return self._count

    def room(self) -> bool:
        return self._count < self.capacity

    def put(self, chunk: list[Incoming]) -> None:
        with self._ready:
            self._chunks.append(chunk)
            self._count += len(chunk)
            self._ready.notify()

    def oldest(self) -> float | None:
        """When the oldest waiting message arrived (time.monotonic()), if any."""
        with self._ready:
            return self._chunks[0][0].arrived if self._chunks else None

    def take(self, limit: int, linger: float, max_bytes: int, wait: float = 0.2) -> list[Incoming]:
        """Up to `limit` messages or about `max_bytes` of payload; waits `wait` for the first
        message, then `linger` for more."""
        batch: list[Incoming] = []
        size = 0
        deadline: float | None = None
        with self._ready:
            while True:
                while self._chunks and len(batch) < limit and size < max_bytes:
                    chunk = self._chunks.popleft()
                    room = limit - len(batch)
                    taken = 0
                    for msg in chunk[:room]:
                        taken += 1
                        size += len(msg.payload)
                        if size >= max_bytes:
                            break
                    if taken < len(chunk):  # split: the rest waits in front
                        self._chunks.appendleft(chunk[taken:])
                        chunk = chunk[:taken]
                    batch.extend(chunk)
                    self._count -= len(chunk)
                if len(batch) >= limit or size >= max_bytes:
                    return batch
                now = time.monotonic()
                if not batch:
                    if deadline is None:
                        deadline = now + wait
                elif deadline is None or deadline > now + linger:
                    deadline = now + linger
                remaining = deadline - now
                timed_out = remaining <= 0 or not self._ready.wait(remaining)
                if timed_out and not self._chunks:
                    return batch


class Worker:
    """One ingest worker. `start()` returns once it runs; `stop()` finishes queued work."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self._limits = settings.limits
        self._inbox = _Inbox(
            max(2 * settings.ingest_receive_maximum, settings.ingest_batch_messages)
        )
        self._store = Store(
            settings.database_url,
            timeouts=Timeouts(
                statement=settings.ingest_db_statement_timeout,
                lock=settings.ingest_db_lock_timeout,
            ),
        )
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._stopping = threading.Event()
        self._abandon = threading.Event()
        self._subscribe_problem: str | None = None
        self._outage: str | None = None  # why the database cannot store now, while it cannot
        self._busy_since: float | None = None  # arrival of the oldest message being stored
        self._next_trim = 0.0
        self._qos0_dropped = 0
        self._last_received_us = 0  # the last receive time handed out (µs since the epoch)
        self.failed = threading.Event()  # set when the parser or the writer thread died
        self._writer: threading.Thread | None = None
        self._parser: threading.Thread | None = None
        # Parsed batches on their way to the writer: parsing the next batch overlaps with the
        # database storing this one (psycopg releases the GIL while it waits).
        self._parsed: queue.Queue[list[Incoming] | None] = queue.Queue(maxsize=PARSED_AHEAD)
        self._parse_since: float | None = None  # arrival of the oldest message being parsed
        self._http: ThreadingHTTPServer | None = None
        self._link = self._make_link()
        # Outages: every database error that is not about a message's content. Retried for
        # ever with exponential backoff and jitter; nothing is acknowledged meanwhile, /ready
        # says why. One Retrying for the writer thread (it resets itself on every call).
        self._retrying = Retrying(
            retry=retry_if_exception_type(StorageUnavailable),
            wait=wait_exponential_jitter(multiplier=0.2, max=30.0, jitter=0.2),
            sleep=self._sleep,
            before_sleep=self._outage_begins,
            reraise=True,
        )

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
        self._parser = threading.Thread(target=self._parse_loop, name="ingest-parser", daemon=True)
        self._parser.start()
        self._writer = threading.Thread(target=self._write_loop, name="ingest-writer", daemon=True)
        self._writer.start()
        log.info(
            "connecting to MQTT broker %s:%d as %r (persistent session, %d s expiry)",
            s.mqtt_host,
            s.mqtt_port,
            s.ingest_client_id,
            s.ingest_session_expiry,
        )
        # The link keeps retrying the first connection and reconnects after every loss, with
        # the same client id and clean_start=False (session resumed).
        self._link.start()

    def request_stop(self) -> None:
        """Ask a worker that is still starting (or running) to stop; safe in a signal handler."""
        self._stopping.set()

    def stop(self, grace: float | None = None) -> None:
        """Stop taking messages, finish what is queued (up to `grace` seconds), disconnect.

        From the moment this is called the worker takes no new QoS 1 message (the broker keeps
        it: it is not acknowledged), so under steady traffic the queue still drains and the
        worker exits as soon as it has. QoS 0 messages that arrive meanwhile are counted and
        logged, never silently dropped.
        """
        grace = self.settings.ingest_shutdown_grace if grace is None else grace
        log.info("stopping: finishing %d queued messages", len(self._inbox))
        self._stopping.set()
        if self._writer is not None:
            self._writer.join(grace)
            if self._writer.is_alive():
                log.warning("shutdown grace over; unacknowledged messages will be redelivered")
                self._abandon.set()
                self._writer.join(10)
        if self._parser is not None:
            self._parser.join(10)
        if self._qos0_dropped:
            log.warning(
                "%d QoS 0 messages arrived during shutdown and were not stored (QoS 0 is at "
                "most once; publish at QoS 1 to have the broker keep them)",
                self._qos0_dropped,
            )
        self._link.stop()  # sends the acks still pending, then DISCONNECT (the session stays)
        self._store.close()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        log.info("stopped")

    def wait_ready(self, timeout: float) -> bool:
        """Wait until connected and subscribed (used by tests and the demo)."""
        return self._subscribed.wait(timeout)

    def ready(self) -> tuple[bool, str]:
        """(ready, why): subscribed, the database writable, and the writer making progress."""
        if self.failed.is_set():
            return False, "the writer thread failed; see the log"
        if not self._connected.is_set():
            return False, "not connected to the MQTT broker"
        if not self._subscribed.is_set():
            return False, self._subscribe_problem or "connected, not yet subscribed"
        outage = self._outage
        if outage is not None:
            return False, outage
        waited = self._oldest_wait()
        bound = self.settings.ingest_ready_max_wait
        if waited > bound:
            return False, (
                f"the writer is stuck: a message has waited {waited:.0f} s without a commit "
                f"(LIVELAB_INGEST_READY_MAX_WAIT is {bound:g} s)"
            )
        problem = self._store.probe()
        if problem is not None:
            return False, problem
        return True, "subscribed, the database is writable and the writer keeps up"

    def _oldest_wait(self) -> float:
        """Seconds the oldest message not yet committed has waited (0 when there is none)."""
        with self._parsed.mutex:
            ahead = [batch[0].arrived for batch in self._parsed.queue if batch]
        times = [self._busy_since, self._parse_since, self._inbox.oldest(), *ahead]
        known = [t for t in times if t is not None]
        return time.monotonic() - min(known) if known else 0.0

    def _migrate(self) -> None:
        delay = 0.5
        while True:
            if self._stopping.is_set():
                raise Stopped
            try:
                applied = migrate(self.settings.database_url)
            except MigrationError as exc:
                if "cannot connect" not in str(exc):
                    raise
                log.warning("waiting for the database (retry in %.0f s): %s", delay, exc)
                if self._stopping.wait(delay):
                    raise Stopped from exc
                delay = min(delay * 2, 30)
                continue
            if applied:
                log.info("applied migrations %s", applied)
            return

    # -- MQTT (paho's thread) ----------------------------------------------------------------

    def _make_link(self) -> Link:
        s = self.settings
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.ingest_session_expiry
        props.ReceiveMaximum = s.ingest_receive_maximum
        credentials = None
        if s.mqtt_username:
            password = s.mqtt_password.get_secret_value() if s.mqtt_password else None
            credentials = (s.mqtt_username, password)
        link = Link(
            self,
            client_id=s.ingest_client_id,
            host=s.mqtt_host,
            port=s.mqtt_port,
            keepalive=s.mqtt_keepalive,
            connect_properties=props,
            credentials=credentials,
            tls=(lambda c: c.tls_set(ca_certs=s.mqtt_tls_ca)) if s.mqtt_tls_ca else None,
        )
        link.client.on_connect = self._on_connect
        link.client.on_disconnect = self._on_disconnect
        link.client.on_subscribe = self._on_subscribe
        return link

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
        self._link.note_connected(True)
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
            self._subscribe_problem = f"the broker refused the subscription: {', '.join(failed)}"
            log.error("%s; check the broker's ACL for this client", self._subscribe_problem)
            return
        self._subscribe_problem = None
        self._subscribed.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._link.note_connected(False)
        self._connected.clear()
        self._subscribed.clear()
        self.metrics.disconnects.inc()
        self.metrics.connected.set(0)
        if self._stopping.is_set():
            log.info("disconnected from the broker")
        else:
            log.warning("lost the broker connection (%s); reconnecting", reason)

    # -- the MQTT thread hands over what it read (ingest.mqtt.Handler) ------------------------

    def room(self) -> bool:
        return self._inbox.room()

    def deliver(self, messages: list[Inbound], received: float) -> None:
        if self._stopping.is_set():
            # Stopping: take nothing new, so the inbox drains. A QoS 1 message is not
            # acknowledged, so the broker keeps it for the next start; QoS 0 (at most once by
            # its nature) is counted and reported by stop().
            self._qos0_dropped += sum(1 for msg in messages if not msg.qos)
            return
        # Receive times are the read's time, made strictly increasing per message (1 µs
        # apart within one read): a form 1 reading takes its time from them, so two messages
        # of one device in one read must not share a time (the second would be a duplicate).
        us = max(int(received * 1_000_000), self._last_received_us + 1)
        arrived = time.monotonic()
        generation = self._link.generation
        chunk = []
        for topic, payload, mid, qos, dup in messages:
            try:
                name = topic.decode()
            except UnicodeDecodeError:
                name = topic.decode("utf-8", "replace")
            received_at = _EPOCH + timedelta(microseconds=us)
            chunk.append(Incoming(name, payload, mid, qos, dup, received_at, generation, arrived))
            us += 1
        self._last_received_us = us - 1
        self._inbox.put(chunk)

    # -- writer thread -----------------------------------------------------------------------

    def _parse_loop(self) -> None:
        """Parser thread: batches from the inbox, parsed, handed to the writer in order."""
        try:
            while not self._abandon.is_set():
                batch = self._collect()
                if not batch:
                    if self._stopping.is_set():
                        break
                    continue
                self._parse_since = min(msg.arrived for msg in batch)
                batch = self._live(batch)
                for msg in batch:
                    if not (msg.dup and msg.qos):  # a redelivery waits for its receipt: writer
                        msg.parsed = self._parse(msg)
                if batch:
                    self._handoff(batch)
                self._parse_since = None
        except _Abandoned:
            return
        except Exception:
            log.critical("the parser thread failed; the worker must be restarted", exc_info=True)
            self.failed.set()
            return
        with contextlib.suppress(_Abandoned):
            self._handoff(None)  # tells the writer that nothing more comes

    def _handoff(self, batch: list[Incoming] | None) -> None:
        while True:
            try:
                self._parsed.put(batch, timeout=0.2)
                return
            except queue.Full:
                if self._abandon.is_set() or self.failed.is_set():
                    raise _Abandoned from None

    def _write_loop(self) -> None:
        try:
            while not self._abandon.is_set():
                try:
                    batch = self._parsed.get(timeout=0.2)
                except queue.Empty:
                    if self.failed.is_set():
                        return  # the parser died: nothing more will come
                    self._housekeeping()
                    continue
                if batch is None:
                    return  # stopping, and everything taken was stored
                self._process(batch)
                self._housekeeping()
        except _Abandoned:
            return
        except Exception:
            # Nothing more will be stored or acknowledged by this process: say so, turn /ready
            # red and let `livelab-ingest` exit non-zero so a supervisor restarts it (the broker
            # redelivers everything un-acknowledged).
            log.critical("the writer thread failed; the worker must be restarted", exc_info=True)
            self.failed.set()

    def _collect(self) -> list[Incoming]:
        s = self.settings
        return self._inbox.take(
            s.ingest_batch_messages, s.ingest_batch_linger_ms / 1000, s.ingest_batch_bytes
        )

    def _process(self, batch: list[Incoming]) -> None:
        m = self.metrics
        m.queue_depth.set(len(self._inbox))
        self._busy_since = min(msg.arrived for msg in batch)
        try:
            redelivered = [msg for msg in batch if msg.parsed is None]
            if redelivered:
                self._retry(self._first_receive_times, redelivered)
                for msg in redelivered:
                    msg.parsed = self._parse(msg)
            self._store_batch(batch)
            stored = [msg for msg in batch if not msg.stale]
            outcomes = {"stored": 0, "partial": 0, "rejected": 0}
            for msg in stored:
                assert msg.parsed is not None
                if msg.parsed.rejection is None:
                    outcomes["stored"] += 1
                else:
                    outcomes["partial" if msg.parsed.readings else "rejected"] += 1
            for outcome, count in outcomes.items():
                if count:
                    m.messages.labels(outcome).inc(count)  # once per batch: labels() is slow
            self._ack(stored)
        finally:
            self._busy_since = None

    def _live(self, batch: list[Incoming]) -> list[Incoming]:
        """Leave out QoS 1 messages of a connection that has ended.

        The broker redelivers them on the new connection (same packet id, DUP set); storing the
        old copy too would be wasted work, and for a form 1 message a second reading.
        """
        current = self._link.generation
        live = []
        for msg in batch:
            if msg.qos and msg.generation != current:
                msg.stale = True
                self.metrics.stale_dropped.inc()
            else:
                live.append(msg)
        return live

    def _first_receive_times(self, batch: list[Incoming]) -> None:
        """Give redelivered messages stamped with their receive time their first one."""
        dups = {msg.mid: msg for msg in batch if msg.dup and msg.qos}
        committed, found = self._store.receipts(self.settings.ingest_client_id, list(dups))
        for mid, msg in dups.items():
            first = receipts.first_receive_time(found, committed, mid, msg.digest())
            if first is not None:
                msg.received_at = first
                self.metrics.redeliveries_matched.inc()

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

    def _retry(self, fn: Callable[[list[Incoming]], None], batch: list[Incoming]) -> None:
        self._retrying(fn, batch)
        if self._outage is not None:
            log.info("database is back; storing again (outage: %s)", self._outage)
            self._outage = None
            self.metrics.db_outage.set(0)

    def _sleep(self, seconds: float) -> None:
        if self._abandon.wait(seconds):
            raise _Abandoned

    def _outage_begins(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self._outage = str(exc)
        self.metrics.db_retries.inc()
        self.metrics.db_outage.set(1)
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "%s; nothing is acknowledged, retry %d in %.1f s", exc, state.attempt_number, delay
        )

    def _store_batch(self, batch: list[Incoming]) -> None:
        """Store `batch`; isolate a message whose content the database refuses."""
        try:
            self._retry(self._write, batch)
            return
        except StorageRefused as exc:
            self.metrics.db_refused.inc()
            if len(batch) > 1:
                log.warning("%s; storing the %d messages one by one", exc, len(batch))
                for msg in batch:
                    self._store_batch([msg])
                return
            refused = exc
        msg = batch[0]
        parsed = msg.parsed
        assert parsed is not None
        log.error(
            "message on %s cannot be stored: %s; recording it as rejected", msg.topic, refused
        )
        count = len(parsed.readings) + (parsed.rejection.rejected_count if parsed.rejection else 0)
        reason = f"could not be stored: {refused}"
        msg.parsed = Parsed(rejection=Rejection(*_lab_device(msg.topic), msg.topic, reason, count))
        # Its rejection record is data we made: a refusal of that is an outage, not content.
        self._retry(self._write_rejection, [msg])

    def _write_rejection(self, batch: list[Incoming]) -> None:
        try:
            self._write(batch)
        except StorageRefused as exc:
            raise StorageUnavailable(f"even the rejection record was refused: {exc}") from exc

    def _write(self, batch: list[Incoming]) -> None:
        """One attempt at storing `batch` in one transaction."""
        batch = self._live(batch)  # a retry may outlive the connection its messages came on
        readings = [r for msg in batch if msg.parsed for r in msg.parsed.readings]
        units = {k: v for msg in batch if msg.parsed for k, v in msg.parsed.units.items()}
        qos1 = [msg for msg in batch if msg.qos]
        stamped = [
            Receipt(msg.mid, msg.digest(), msg.received_at)
            for msg in qos1
            if msg.parsed and msg.parsed.relative
        ]
        started = time.perf_counter()
        result = self._store.write(
            readings,
            self._rejection_rows(batch),
            units,
            client=(self.settings.ingest_client_id, len(qos1)),
            receipts=stamped,
        )
        self.metrics.batches.inc()
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.readings.labels("stored").inc(result.inserted)
        self.metrics.readings.labels("duplicate").inc(result.duplicates)
        self.metrics.rejections.inc(result.rejections)

    def _rejection_rows(self, batch: list[Incoming]) -> list[RejectionRow]:
        """Rejection records of `batch`; repeats of one reason from one topic are merged."""
        keep = self.settings.ingest_rejection_payload_bytes
        interval = self.settings.ingest_rejection_merge_seconds
        rows: dict[object, RejectionRow] = {}
        for index, msg in enumerate(batch):
            rejection = msg.parsed.rejection if msg.parsed else None
            if rejection is None:
                continue
            row = RejectionRow(
                received_at=msg.received_at,
                lab=rejection.lab,
                device=rejection.device,
                topic=msg.topic,
                reason=rejection.reason,
                rejected_count=rejection.rejected_count,
                payload=msg.payload[:keep],
                payload_size=len(msg.payload),
            )
            if interval <= 0:
                rows[index] = row
                continue
            stamp = int(msg.received_at.timestamp()) // interval * interval
            row.merge_window = datetime.fromtimestamp(stamp, UTC)
            row.merge_key = receipts.digest(
                f"{rejection.lab}\0{rejection.device}\0{rejection.reason}", msg.topic.encode()
            )
            key = (row.merge_key, stamp)
            first = rows.get(key)
            if first is None:
                rows[key] = row
            else:
                first.repeats += 1
                first.rejected_count += row.rejected_count
                first.last_received_at = max(
                    first.last_received_at or first.received_at, row.received_at
                )
        return list(rows.values())

    def _housekeeping(self) -> None:
        """Every few minutes: rejections past their retention or their lab's cap are deleted."""
        now = time.monotonic()
        if now < self._next_trim:
            return
        self._next_trim = now + TRIM_INTERVAL
        s = self.settings
        try:
            deleted = self._store.trim_rejections(
                older_than=datetime.now(UTC) - timedelta(days=s.ingest_rejection_retention_days),
                per_lab=s.ingest_rejection_max_per_lab,
            )
        except (StorageUnavailable, StorageRefused) as exc:
            log.warning("could not trim old rejections (trying again later): %s", exc)
            return
        if deleted:
            self.metrics.rejections_trimmed.inc(deleted)
            log.info("deleted %d rejections past their retention or their lab's cap", deleted)

    def _ack(self, batch: list[Incoming]) -> None:
        """Hand the batch's QoS 1 packet ids to the MQTT thread, per connection generation."""
        current = self._link.generation
        mids = [msg.mid for msg in batch if msg.qos and msg.generation == current]
        skipped = sum(1 for msg in batch if msg.qos) - len(mids)
        if skipped:
            self.metrics.acks_skipped.inc(skipped)
        if mids:
            # The link checks the generation again when it writes them: it owns the connection.
            self._link.ack(current, mids)
            self.metrics.acks.inc(len(mids))


class _Abandoned(Exception):
    """Shutdown's grace is over while the writer waits for the database."""


def _lab_device(topic: str) -> tuple[str | None, str | None]:
    """The lab and device a topic names, where they are valid (for a rejection record)."""
    try:
        where = parse_topic(topic)
    except TopicError as exc:
        return exc.lab, exc.device
    return where.lab, where.device
