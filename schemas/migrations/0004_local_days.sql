-- The daily rollup follows the local days of one time zone, the deployment's (`rollup_settings`),
-- so that a year of daily or monthly aggregates in that zone reads one partial per day instead of
-- 24 hourly ones. UTC until an operator runs `livelab-rollups zone NAME` (which rebuilds
-- `rollup_1d` in the new zone in one transaction): with UTC every existing row stays as it is.
-- Daily partials are added from the 15-minute ones, so a day of any zone whose midnights fall on
-- quarter hours (every zone since 1970 that `livelab-rollups zone` accepts) is exact.

CREATE TABLE rollup_settings (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    zone     text    NOT NULL  -- IANA name; `rollup_1d.bucket` is the start of a local day in it
);
INSERT INTO rollup_settings (zone) VALUES ('UTC');

-- Readings deleted or changed by hand: as in 0003, with the day in the deployment's zone.
CREATE OR REPLACE FUNCTION livelab_rollups_refresh(sid integer, t timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    tz text := (SELECT zone FROM rollup_settings);
    b15 timestamptz := time_bucket(INTERVAL '15 minutes', t);
    b1h timestamptz := time_bucket(INTERVAL '1 hour', t);
    b1d timestamptz := time_bucket(INTERVAL '1 day', t, tz);
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
    SELECT sid, b1d, sum(n), sum(total), min(lo), max(hi) FROM rollup_15m
    WHERE series_id = sid AND bucket >= b1d - INTERVAL '1 day' AND bucket < b1d + INTERVAL '2 days'
      AND time_bucket(INTERVAL '1 day', bucket, tz) = b1d
    HAVING count(*) > 0;
END
$$;
