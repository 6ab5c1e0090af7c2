"""Write readings and rejections to TimescaleDB, exactly once per (series, time).

One `Store` owns one connection and is used by one thread (the worker's writer). `write()`
stores a batch in a single transaction:

1. series ids for names not yet cached are created/looked up (``series``);
2. readings are COPYed (binary) into a temporary staging table, then moved with
   ``INSERT ... ON CONFLICT DO NOTHING`` in arrival order, so the first value of a
   (series, time) wins and redeliveries change nothing;
3. the series' first/last time and reading count, and the rollups (`ingest.rollups`), are
   updated from the rows really inserted;
4. rejections are COPYed into ``rejections``.

Errors are translated at this edge (see `ingest.errors`): connection trouble becomes
`StorageUnavailable` (the caller retries), anything the database refuses becomes `StorageRefused`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from ingest.errors import StorageRefused, StorageUnavailable
from ingest.parse import Reading
from ingest.rollups import MAINTAIN

log = logging.getLogger("livelab.ingest.store")

SeriesKey = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class RejectionRow:
    received_at: datetime
    lab: str | None
    device: str | None
    topic: str
    reason: str
    rejected_count: int
    payload: bytes  # already truncated
    payload_size: int


@dataclass(frozen=True, slots=True)
class WriteResult:
    inserted: int  # readings stored now
    duplicates: int  # readings whose (series, time) was already stored
    rejections: int


_STAGE = """
CREATE TEMPORARY TABLE IF NOT EXISTS livelab_stage (
    seq       integer          NOT NULL,
    series_id integer          NOT NULL,
    time      timestamptz      NOT NULL,
    value     double precision NOT NULL
) ON COMMIT DELETE ROWS
"""

_MOVE = f"""
WITH inserted AS (
    INSERT INTO readings (series_id, time, value)
    SELECT series_id, time, value FROM livelab_stage ORDER BY seq
    ON CONFLICT DO NOTHING
    RETURNING series_id, time, value
), {MAINTAIN}, per_series AS (
    SELECT series_id, min(time) AS first, max(time) AS last, count(*) AS n
    FROM inserted GROUP BY series_id
)
UPDATE series AS s
SET first_time = LEAST(s.first_time, p.first),
    last_time = GREATEST(s.last_time, p.last),
    reading_count = s.reading_count + p.n
FROM per_series AS p
WHERE s.id = p.series_id
RETURNING p.n
"""


class Store:
    """Batched, idempotent writes for one thread. Call `close()` when done."""

    def __init__(self, conninfo: str, *, connect_timeout: float = 10.0) -> None:
        if connect_timeout <= 0:
            raise ValueError("connect_timeout must be positive")
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
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
                connect_timeout=int(self._connect_timeout),
                application_name="livelab-ingest",
                autocommit=True,  # transactions are explicit: conn.transaction()
            )
            conn.execute(_STAGE)
        except psycopg.OperationalError as exc:
            raise StorageUnavailable(f"cannot connect to the database: {exc}".strip()) from exc
        self._conn = conn
        return conn

    def ping(self) -> bool:
        """True when the database answers (used by /ready); never raises."""
        try:
            with psycopg.connect(self._conninfo, connect_timeout=3, autocommit=True) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

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
    ) -> WriteResult:
        """Store one batch in one transaction. Raises StorageUnavailable or StorageRefused."""
        conn = self._connection()
        new_ids: dict[SeriesKey, int] = {}
        new_units: dict[SeriesKey, str | None] = {}
        try:
            with conn.transaction(), conn.cursor() as cur:
                ids = self._series_ids(cur, readings, units or {}, new_ids, new_units)
                inserted = self._insert(cur, readings, ids)
                self._reject(cur, rejections)
        except psycopg.Error as exc:
            raise self._translate(exc) from exc
        # Only now that the transaction committed may the caches believe what it wrote.
        self._series.update(new_ids)
        self._units.update(new_units)
        return WriteResult(inserted, len(readings) - inserted, len(rejections))

    def _translate(self, exc: psycopg.Error) -> StorageUnavailable | StorageRefused:
        conn = self._conn
        broken = conn is None or conn.closed or conn.broken
        # OperationalError covers lost connections, shutdown, "starting up", deadlocks,
        # serialization failures and lock timeouts: all worth retrying as they are.
        if broken or isinstance(exc, psycopg.OperationalError):
            if broken:
                self.close()
            return StorageUnavailable(f"database unavailable: {exc}".strip())
        return StorageRefused(f"database refused the batch: {exc}".strip())

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
        with cur.copy(
            "COPY livelab_stage (seq, series_id, time, value) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int4", "int4", "timestamptz", "float8"])
            touched: set[int] = set()
            for seq, (lab, device, sensor, when, value) in enumerate(readings):
                sid = ids[(lab, device, sensor)]
                touched.add(sid)
                copy.write_row((seq, sid, when, value))
        # Lock the touched series rows in id order: concurrent workers then take them in one
        # order for the statistics update below instead of deadlocking.
        cur.execute(
            "SELECT 1 FROM series WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE",
            (sorted(touched),),
        )
        cur.execute(_MOVE)
        return sum(row[0] for row in cur.fetchall())

    def _reject(self, cur: psycopg.Cursor, rejections: Sequence[RejectionRow]) -> None:
        if not rejections:
            return
        with cur.copy(
            "COPY rejections (received_at, lab, device, topic, reason, rejected_count, "
            "payload, payload_size) FROM STDIN"
        ) as copy:
            for r in rejections:
                copy.write_row(
                    (
                        r.received_at,
                        r.lab,
                        r.device,
                        _text(r.topic),
                        _text(r.reason),
                        r.rejected_count,
                        r.payload,
                        r.payload_size,
                    )
                )


def _text(value: str) -> str:
    # PostgreSQL text cannot hold NUL; a topic or reason should never carry one, but a rejection
    # must be storable whatever the device sent.
    return value.replace("\x00", "\\0")
