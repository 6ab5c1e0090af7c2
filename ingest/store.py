"""Write readings and rejections to TimescaleDB, exactly once per (series, time).

One `Store` owns one connection and is used by one thread (the worker's writer). `write()`
stores a batch in a single transaction:

1. series ids for names not yet cached are created/looked up (``series``);
2. readings are COPYed (binary) into a temporary staging table, leaving out a (series, time)
   the batch already had, then moved to ``readings`` (a plain INSERT, or ``INSERT ... ON
   CONFLICT DO NOTHING`` when some already exist), so the first value of a (series, time) wins
   and redeliveries change nothing;
3. the series' first/last time and reading count, and the rollups (`ingest.rollups`), are
   updated from the rows really inserted;
4. rejections are inserted into ``rejections``, merged with a row of the same device, topic and
   reason in the same merge interval (one row with a count instead of a row per message);
5. receipts of messages stamped with their receive time (`ingest.receipts`) are upserted and the
   client's committed-message count advanced.

Errors are translated at this edge (see `ingest.errors`). Only a data exception (SQLSTATE class
22: a value the database cannot hold) can be caused by a message's content; it becomes
`StorageRefused` and the caller isolates the message. Everything else (connection trouble,
permissions, a read-only standby, timeouts, internal errors) is an outage of the service:
`StorageUnavailable`, which the caller retries without acknowledging anything.

The writer's connection has a statement timeout, a lock timeout and TCP keepalives, so a lock
wait or a half-dead connection becomes an error (and a retry) instead of a writer hung for ever.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from ingest.errors import StorageRefused, StorageUnavailable
from ingest.parse import Reading
from ingest.rollups import MAINTAIN, SERIES_STATS
from schemas.rollups import TIERS

log = logging.getLogger("livelab.ingest.store")

SeriesKey = tuple[str, str, str]


@dataclass(slots=True)
class RejectionRow:
    received_at: datetime
    lab: str | None
    device: str | None
    topic: str
    reason: str
    rejected_count: int
    payload: bytes  # already truncated
    payload_size: int
    repeats: int = 1  # messages this row stands for
    last_received_at: datetime | None = None  # newest of them (None: received_at)
    merge_key: bytes | None = None  # rows with the same key and window are merged
    merge_window: datetime | None = None


@dataclass(frozen=True, slots=True)
class Receipt:
    """A message whose readings took their time from the receive time (see ingest.receipts)."""

    mid: int
    digest: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class WriteResult:
    inserted: int  # readings stored now
    duplicates: int  # readings whose (series, time) was already stored
    rejections: int  # rejected messages recorded (merged rows count every message)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Bounds of the writer's connection, so that no wait is for ever."""

    connect: float = 10.0
    statement: float = 30.0
    lock: float = 10.0
    keepalive_idle: int = 10
    keepalive_interval: int = 5
    keepalive_count: int = 3

    def __post_init__(self) -> None:
        if min(self.connect, self.statement, self.lock) <= 0:
            raise ValueError("connect, statement and lock timeouts must be positive")
        if min(self.keepalive_idle, self.keepalive_interval, self.keepalive_count) < 1:
            raise ValueError("keepalive settings must be at least 1")

    def connect_kwargs(self) -> dict[str, object]:
        ms = int(self.statement * 1000), int(self.lock * 1000)
        # tcp_user_timeout: unacknowledged data for this long breaks the connection (Linux);
        # keepalives find a peer that vanished while the connection was idle.
        user_timeout = (self.keepalive_idle + self.keepalive_interval * self.keepalive_count) * 1000
        return {
            "connect_timeout": max(1, int(self.connect)),
            "keepalives": 1,
            "keepalives_idle": self.keepalive_idle,
            "keepalives_interval": self.keepalive_interval,
            "keepalives_count": self.keepalive_count,
            "tcp_user_timeout": user_timeout,
            "options": f"-c statement_timeout={ms[0]} -c lock_timeout={ms[1]}",
        }


_STAGE = """
CREATE TEMPORARY TABLE IF NOT EXISTS livelab_stage (
    series_id integer          NOT NULL,
    time      timestamptz      NOT NULL,
    value     double precision NOT NULL
) ON COMMIT DELETE ROWS
"""

# Stage to readings. The fast path is a plain INSERT, in a savepoint: on a hypertable it is
# about twice as fast as INSERT ... ON CONFLICT (measured with 200 000-row batches: 0.6-0.7 s
# against 1.4-1.9 s), and a batch has no (series, time) twice (`_insert` leaves repeats out).
# When a reading already exists (a redelivery, a duplicate) the savepoint is rolled back and
# the batch goes the exact path: ON CONFLICT DO NOTHING, counting only the rows it added.
# Either way `inserted` is exactly the rows added, from which the rollups (MAINTAIN) and the
# series' statistics are updated.
_FAST = (
    "INSERT INTO readings (series_id, time, value) SELECT series_id, time, value FROM livelab_stage"
)

_PER_SERIES_FAST = f"""
WITH inserted AS (
    SELECT series_id, time, value FROM livelab_stage
), {MAINTAIN}, {SERIES_STATS}"""

_PER_SERIES_EXACT = f"""
WITH inserted AS (
    INSERT INTO readings (series_id, time, value)
    SELECT series_id, time, value FROM livelab_stage
    ON CONFLICT DO NOTHING
    RETURNING series_id, time, value
), {MAINTAIN}, {SERIES_STATS}"""

# The series' statistics from the rows really inserted, in the same transaction.
_UPDATE_SERIES = """
UPDATE series AS s
SET first_time = LEAST(s.first_time, p.first),
    last_time = GREATEST(s.last_time, p.last),
    reading_count = s.reading_count + p.n
FROM per_series AS p
WHERE s.id = p.series_id
RETURNING p.n
"""

_REJECT = """
INSERT INTO rejections AS r (received_at, last_received_at, lab, device, topic, reason,
                             rejected_count, repeats, payload, payload_size, merge_key,
                             merge_window)
SELECT * FROM unnest(%s::timestamptz[], %s::timestamptz[], %s::text[], %s::text[], %s::text[],
                     %s::text[], %s::int[], %s::int[], %s::bytea[], %s::int[], %s::bytea[],
                     %s::timestamptz[])
ON CONFLICT (merge_key, merge_window) DO UPDATE
SET repeats = r.repeats + EXCLUDED.repeats,
    rejected_count = r.rejected_count + EXCLUDED.rejected_count,
    last_received_at = GREATEST(coalesce(r.last_received_at, r.received_at),
                                EXCLUDED.last_received_at)
"""

_ADVANCE = """
INSERT INTO ingest_clients AS c (client_id, committed) VALUES (%s, %s)
ON CONFLICT (client_id) DO UPDATE SET committed = c.committed + EXCLUDED.committed
RETURNING committed
"""

# What the writer needs to be allowed to do; checked by /ready (`Store.probe`).
_PRIVILEGES = (
    ("readings", "INSERT"),
    ("readings", "SELECT"),
    ("series", "INSERT"),
    ("series", "UPDATE"),
    ("rejections", "INSERT"),
    ("rejections", "UPDATE"),
    ("ingest_receipts", "INSERT"),
    ("ingest_receipts", "UPDATE"),
    ("ingest_clients", "INSERT"),
    ("ingest_clients", "UPDATE"),
    *((tier.table, priv) for tier in TIERS for priv in ("SELECT", "INSERT", "UPDATE")),
    ("rollup_settings", "SELECT"),
)


class Store:
    """Batched, idempotent writes for one thread. Call `close()` when done."""

    def __init__(self, conninfo: str, *, timeouts: Timeouts | None = None) -> None:
        self._conninfo = conninfo
        self._timeouts = timeouts or Timeouts()
        self._conn: psycopg.Connection | None = None
        self._series: dict[SeriesKey, int] = {}
        self._units: dict[SeriesKey, str | None] = {}

    # -- connection -------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = psycopg.connect(
                self._conninfo,
                application_name="livelab-ingest",
                autocommit=True,  # transactions are explicit: conn.transaction()
                **self._timeouts.connect_kwargs(),  # type: ignore[arg-type]
            )
        except psycopg.Error as exc:
            raise StorageUnavailable(f"cannot connect to the database: {exc}".strip()) from exc
        try:
            conn.execute(_STAGE)
        except psycopg.Error as exc:
            conn.close()
            raise StorageUnavailable(_outage(exc, broken=False)) from exc
        self._conn = conn
        return conn

    def probe(self) -> str | None:
        """Why the writer could not store now (None: it can); for /ready. Never raises.

        Checks on a connection of its own that the server answers, is not a read-only standby,
        and grants the writer's role every privilege a batch needs.
        """
        checks = ", ".join(
            f"has_table_privilege('{table}', '{priv}')" for table, priv in _PRIVILEGES
        )
        try:
            with psycopg.connect(
                self._conninfo, connect_timeout=3, autocommit=True, application_name="livelab-ready"
            ) as conn:
                row = conn.execute(
                    "SELECT current_user, pg_is_in_recovery() OR "
                    f"current_setting('transaction_read_only')::bool, {checks}"
                ).fetchone()
        except psycopg.errors.UndefinedTable as exc:
            return f"the database is not migrated ({_first_line(exc)}); run livelab-migrate"
        except psycopg.Error as exc:
            return f"database unreachable: {_first_line(exc)}"
        assert row is not None
        user, standby, *granted = row
        if standby:
            return (
                "the database is read-only (a standby?); point LIVELAB_DATABASE_URL at the primary"
            )
        missing = [f"{p} on {t}" for (t, p), ok in zip(_PRIVILEGES, granted, strict=True) if not ok]
        if missing:
            return f"database role {user!r} lacks {', '.join(missing)}; see README, Database role"
        return None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- writing ----------------------------------------------------------------------------

    def write(
        self,
        readings: Sequence[Reading],
        rejections: Sequence[RejectionRow] = (),
        units: Mapping[SeriesKey, str] | None = None,
        *,
        client: tuple[str, int] | None = None,
        receipts: Sequence[Receipt] = (),
    ) -> WriteResult:
        """Store one batch in one transaction. Raises StorageUnavailable or StorageRefused.

        `client` is (client id, QoS 1 messages in the batch): their count is added to the
        client's committed count, and `receipts` are recorded with the new count.
        """
        conn = self._connection()
        new_ids: dict[SeriesKey, int] = {}
        new_units: dict[SeriesKey, str | None] = {}
        try:
            with conn.transaction(), conn.cursor() as cur:
                ids = self._series_ids(cur, readings, units or {}, new_ids, new_units)
                inserted = self._insert(cur, readings, ids)
                self._reject(cur, rejections)
                if client is not None:
                    self._receipts(cur, client, receipts)
        except psycopg.Error as exc:
            raise self._translate(exc) from exc
        # Only now that the transaction committed may the caches believe what it wrote.
        self._series.update(new_ids)
        self._units.update(new_units)
        return WriteResult(inserted, len(readings) - inserted, sum(r.repeats for r in rejections))

    def receipts(self, client_id: str, mids: Sequence[int]) -> tuple[int, dict[int, tuple]]:
        """(the client's committed count, {mid: (digest, received_at, seq)}) for `mids`."""
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT committed FROM ingest_clients WHERE client_id = %s", (client_id,)
                )
                row = cur.fetchone()
                cur.execute(
                    "SELECT mid, digest, received_at, seq FROM ingest_receipts "
                    "WHERE client_id = %s AND mid = ANY(%s)",
                    (client_id, list(mids)),
                )
                found = {mid: (bytes(d), t, seq) for mid, d, t, seq in cur.fetchall()}
        except psycopg.Error as exc:
            raise self._translate(exc) from exc
        return (row[0] if row else 0), found

    def trim_rejections(self, *, older_than: datetime, per_lab: int) -> int:
        """Delete rejections received before `older_than`, and all but the newest `per_lab`
        rows of each lab (lab-less rows count as one lab). Returns the rows deleted."""
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(
                    "DELETE FROM rejections WHERE received_at < %(t)s "
                    "AND coalesce(last_received_at, received_at) < %(t)s",
                    {"t": older_than},
                )
                deleted = cur.rowcount
                cur.execute(
                    "SELECT lab FROM rejections GROUP BY lab HAVING count(*) > %s", (per_lab,)
                )
                for (lab,) in cur.fetchall():
                    cur.execute(
                        "DELETE FROM rejections WHERE lab IS NOT DISTINCT FROM %(lab)s AND id < ("
                        " SELECT id FROM rejections WHERE lab IS NOT DISTINCT FROM %(lab)s"
                        " ORDER BY id DESC OFFSET %(keep)s LIMIT 1)",
                        {"lab": lab, "keep": per_lab - 1},
                    )
                    deleted += cur.rowcount
        except psycopg.Error as exc:
            raise self._translate(exc) from exc
        return deleted

    def _translate(self, exc: psycopg.Error) -> StorageUnavailable | StorageRefused:
        conn = self._conn
        broken = conn is None or conn.closed or conn.broken
        if not broken and isinstance(exc, psycopg.errors.DataError):
            # SQLSTATE class 22: a value the database cannot hold. Of all the errors a batch
            # can meet, only this one can come from a message's content.
            return StorageRefused(f"database refused the data: {_first_line(exc)}")
        # An outage. The retry takes a new connection: a session keeps what it was started
        # with (a read-only default, a failed-over host), and a fix should take effect.
        self.close()
        return StorageUnavailable(_outage(exc, broken))

    def _series_ids(
        self,
        cur: psycopg.Cursor,
        readings: Sequence[Reading],
        units: Mapping[SeriesKey, str],
        new_ids: dict[SeriesKey, int],
        new_units: dict[SeriesKey, str | None],
    ) -> Mapping[SeriesKey, int]:
        cache = self._series
        missing = {(r[0], r[1], r[2]) for r in readings if (r[0], r[1], r[2]) not in cache}
        if missing:
            # Sorted, so that two workers creating the same new series take locks in one order.
            keys = sorted(missing)
            labs, devices, sensors = (list(col) for col in zip(*keys, strict=True))
            unit_list = [units.get(k) for k in keys]
            cur.execute(
                "INSERT INTO series (lab, device, sensor, unit) "
                "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) "
                "ON CONFLICT (lab, device, sensor) DO NOTHING",
                (labs, devices, sensors, unit_list),
            )
            cur.execute(
                "SELECT s.id, s.lab, s.device, s.sensor, s.unit FROM series s "
                "JOIN unnest(%s::text[], %s::text[], %s::text[]) AS k(lab, device, sensor) "
                "USING (lab, device, sensor)",
                (labs, devices, sensors),
            )
            for sid, lab, device, sensor, unit in cur.fetchall():
                new_ids[(lab, device, sensor)] = sid
                new_units[(lab, device, sensor)] = unit
        # Only SenML carries units; JSON telemetry skips this (no per-batch work on the cache).
        changed = [
            (unit, key)
            for key, unit in units.items()
            if new_units.get(key, self._units.get(key)) != unit
        ]
        if changed:
            cur.executemany(
                "UPDATE series SET unit = %s WHERE lab = %s AND device = %s AND sensor = %s",
                [(unit, *key) for unit, key in changed],
            )
            new_units.update({key: unit for unit, key in changed})
        return {**cache, **new_ids} if new_ids else cache

    def _insert(
        self, cur: psycopg.Cursor, readings: Sequence[Reading], ids: Mapping[SeriesKey, int]
    ) -> int:
        if not readings:
            return 0
        # A (series, time) repeated within the batch is left out here, so the first value wins
        # without the database having to sort the batch into arrival order.
        seen: set[tuple[int, datetime]] = set()
        touched: set[int] = set()
        with cur.copy(
            "COPY livelab_stage (series_id, time, value) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int4", "timestamptz", "float8"])
            write = copy.write_row
            for lab, device, sensor, when, value in readings:
                sid = ids[(lab, device, sensor)]
                key = (sid, when)
                if key in seen:
                    continue
                seen.add(key)
                touched.add(sid)
                write((sid, when, value))
        # Lock the touched series rows in id order: concurrent workers then take them in one
        # order for the statistics update below instead of deadlocking.
        cur.execute(
            "SELECT 1 FROM series WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE",
            (sorted(touched),),
        )
        try:
            with cur.connection.transaction():  # a savepoint
                cur.execute(_FAST)
            cur.execute(_PER_SERIES_FAST + _UPDATE_SERIES)
        except psycopg.errors.UniqueViolation:
            cur.execute(_PER_SERIES_EXACT + _UPDATE_SERIES)
        return sum(row[0] for row in cur.fetchall())

    def _reject(self, cur: psycopg.Cursor, rejections: Sequence[RejectionRow]) -> None:
        if not rejections:
            return
        cols: list[list[object]] = [[] for _ in range(12)]
        for r in rejections:
            values = (
                r.received_at,
                r.last_received_at or r.received_at,
                r.lab,
                r.device,
                _text(r.topic),
                _text(r.reason),
                r.rejected_count,
                r.repeats,
                r.payload,
                r.payload_size,
                r.merge_key,
                r.merge_window,
            )
            for col, value in zip(cols, values, strict=True):
                col.append(value)
        cur.execute(_REJECT, cols)

    def _receipts(
        self, cur: psycopg.Cursor, client: tuple[str, int], receipts: Sequence[Receipt]
    ) -> None:
        client_id, messages = client
        if messages == 0:
            return
        cur.execute(_ADVANCE, (client_id, messages))
        row = cur.fetchone()
        assert row is not None
        if not receipts:
            return
        latest = {r.mid: r for r in receipts}  # one row per packet id (the last one wins)
        cur.execute(
            "INSERT INTO ingest_receipts AS r (client_id, mid, digest, received_at, seq) "
            "SELECT %s, m, d, t, %s FROM unnest(%s::int[], %s::bytea[], %s::timestamptz[]) "
            "AS u(m, d, t) "
            "ON CONFLICT (client_id, mid) DO UPDATE "
            "SET digest = EXCLUDED.digest, received_at = EXCLUDED.received_at, seq = EXCLUDED.seq",
            (
                client_id,
                row[0],
                list(latest),
                [r.digest for r in latest.values()],
                [r.received_at for r in latest.values()],
            ),
        )


def _text(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and UTF-8 cannot hold a lone surrogate (JSON's "\ud800"
    # quoted in a reason); a topic or reason should never carry either, but a rejection must be
    # storable whatever the device sent.
    if value.isascii():
        return value.replace("\x00", "\\0")
    safe = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return safe.replace("\x00", "\\0")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# SQLSTATEs of common operator mistakes, and what to do about them.
_HINTS = {
    "42501": "grant the ingest role INSERT, SELECT and UPDATE on livelab's tables (README, "
    "Database role)",
    "25006": "the database is read-only (a standby after a failover?); point "
    "LIVELAB_DATABASE_URL at the primary",
    "42P01": "a table is missing: run livelab-migrate against this database",
    "42703": "the schema is older or newer than this worker: run livelab-migrate",
    "57014": "a statement ran longer than LIVELAB_INGEST_DB_STATEMENT_TIMEOUT",
    "55P03": "a lock was held longer than LIVELAB_INGEST_DB_LOCK_TIMEOUT; look for a "
    "long transaction or a LOCK TABLE in pg_stat_activity",
    "53100": "the database server's disk is full",
    "53200": "the database server is out of memory",
}


def _outage(exc: psycopg.Error, broken: bool) -> str:
    state = getattr(exc.diag, "sqlstate", None) if not broken else None
    text = f"database unavailable: {_first_line(exc)}"
    if state:
        text += f" (SQLSTATE {state})"
    hint = _HINTS.get(state or "")
    return f"{text}; {hint}" if hint else text
