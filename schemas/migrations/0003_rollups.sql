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

-- Readings deleted or changed by hand (ingest only inserts) are taken out of the partials at
-- once: the buckets of each such row are recomputed from what is left, finest tier first.
-- (drop_chunks fires no triggers: after dropping old chunks, the rollups keep their
-- statistics until `livelab-rollups rebuild` is run for that range.)
CREATE FUNCTION livelab_rollups_refresh(sid integer, t timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    b15 timestamptz := time_bucket(INTERVAL '15 minutes', t);
    b1h timestamptz := time_bucket(INTERVAL '1 hour', t);
    b1d timestamptz := time_bucket(INTERVAL '1 day', t);
BEGIN
    -- The lock the ingest writer takes before it adds to a series' partials.
    PERFORM 1 FROM series WHERE id = sid FOR NO KEY UPDATE;
    DELETE FROM rollup_15m WHERE series_id = sid AND bucket = b15;
    INSERT INTO rollup_15m (series_id, bucket, n, total, lo, hi)
    SELECT sid, b15, count(*), sum(value), min(value), max(value) FROM readings
    WHERE series_id = sid AND time >= b15 AND time < b15 + INTERVAL '15 minutes'
    HAVING count(*) > 0;
    DELETE FROM rollup_1h WHERE series_id = sid AND bucket = b1h;
    INSERT INTO rollup_1h (series_id, bucket, n, total, lo, hi)
    SELECT sid, b1h, sum(n), sum(total), min(lo), max(hi) FROM rollup_15m
    WHERE series_id = sid AND bucket >= b1h AND bucket < b1h + INTERVAL '1 hour'
    HAVING count(*) > 0;
    DELETE FROM rollup_1d WHERE series_id = sid AND bucket = b1d;
    INSERT INTO rollup_1d (series_id, bucket, n, total, lo, hi)
    SELECT sid, b1d, sum(n), sum(total), min(lo), max(hi) FROM rollup_1h
    WHERE series_id = sid AND bucket >= b1d AND bucket < b1d + INTERVAL '1 day'
    HAVING count(*) > 0;
END
$$;

CREATE FUNCTION livelab_rollups_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM livelab_rollups_refresh(OLD.series_id, OLD.time);
    IF TG_OP = 'UPDATE' THEN
        PERFORM livelab_rollups_refresh(NEW.series_id, NEW.time);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER readings_rollups AFTER UPDATE OR DELETE ON readings
FOR EACH ROW EXECUTE FUNCTION livelab_rollups_changed();
