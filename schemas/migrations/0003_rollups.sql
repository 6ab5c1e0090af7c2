-- Rollups: exact partials (count, sum, min, max) per series in UTC buckets of 15 minutes, one
-- hour and one day. The ingest writer adds to them in the same statement that inserts the
-- readings, from the rows that statement really inserted (`ingest/rollups.py`), so a duplicate
-- or a redelivery never counts twice and a late reading is in its bucket when it commits.
-- The API composes aggregates from them (`api/compose.py`); `livelab-rollups rebuild|verify`
-- recomputes or checks them against the readings.
--
-- Plain tables, not continuous aggregates: those exist only in TimescaleDB's community
-- edition, and they lag behind late data.

CREATE TABLE rollup_15m (
    series_id integer          NOT NULL,
    bucket    timestamptz      NOT NULL,  -- start of the UTC bucket
    n         bigint           NOT NULL,  -- readings
    total     double precision NOT NULL,  -- their sum
    lo        double precision NOT NULL,  -- min
    hi        double precision NOT NULL,  -- max
    CONSTRAINT rollup_15m_pkey PRIMARY KEY (series_id, bucket)
);
CREATE TABLE rollup_1h (LIKE rollup_15m INCLUDING ALL);
CREATE TABLE rollup_1d (LIKE rollup_15m INCLUDING ALL);

-- Fill them from the readings already stored (each tier from the one below it).
INSERT INTO rollup_15m (series_id, bucket, n, total, lo, hi)
SELECT series_id, time_bucket(INTERVAL '15 minutes', time), count(*), sum(value), min(value),
       max(value)
FROM readings GROUP BY 1, 2;

INSERT INTO rollup_1h (series_id, bucket, n, total, lo, hi)
SELECT series_id, time_bucket(INTERVAL '1 hour', bucket), sum(n), sum(total), min(lo), max(hi)
FROM rollup_15m GROUP BY 1, 2;

INSERT INTO rollup_1d (series_id, bucket, n, total, lo, hi)
SELECT series_id, time_bucket(INTERVAL '1 day', bucket), sum(n), sum(total), min(lo), max(hi)
FROM rollup_1h GROUP BY 1, 2;
