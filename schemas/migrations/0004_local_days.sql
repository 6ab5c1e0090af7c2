-- The daily rollup follows the local days of one time zone, the deployment's (`rollup_settings`),
-- so that a year of daily or monthly aggregates in that zone reads one partial per day instead of
-- 24 hourly ones. UTC until an operator runs `livelab-rollups zone NAME` (which rebuilds
-- `rollup_1d` in the new zone in one transaction): with UTC every existing row stays as it is.
-- Daily partials are added from the 15-minute ones, so a day of any zone whose midnights fall on
-- quarter hours (every zone since 1970 that `livelab-rollups zone` accepts) is exact.
-- (`CREATE EXTENSION timescaledb` and its version come from 0001.)

CREATE TABLE rollup_settings (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    zone     text    NOT NULL  -- IANA name; `rollup_1d.bucket` is the start of a local day in it
);
INSERT INTO rollup_settings (zone) VALUES ('UTC');

-- Readings deleted or changed by hand (ingest only inserts) are taken out of the partials at
-- once: the buckets they were (and, for an UPDATE, are) in are recomputed from what is left,
-- finest tier first, the days in the deployment's zone. Once per statement, over the statement's
-- transition tables (TimescaleDB 2.18 and later), so that deleting a million readings is a few
-- set-wise statements rather than a million calls; with an older TimescaleDB, once per row.
CREATE FUNCTION livelab_rollups_recompute(sids integer[], ts timestamptz[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    tz text := (SELECT zone FROM rollup_settings);
BEGIN
    -- The locks the ingest writer takes, in its order, before it adds to a series' partials.
    PERFORM 1 FROM series WHERE id IN (SELECT unnest(sids)) ORDER BY id FOR NO KEY UPDATE;
    CREATE TEMPORARY TABLE IF NOT EXISTS livelab_changed (
        series_id integer, b15 timestamptz, b1h timestamptz, b1d timestamptz
    ) ON COMMIT DROP;
    TRUNCATE livelab_changed;
    INSERT INTO livelab_changed
    SELECT DISTINCT s, time_bucket(INTERVAL '15 minutes', t), time_bucket(INTERVAL '1 hour', t),
           time_bucket(INTERVAL '1 day', t, tz)
    FROM unnest(sids, ts) AS u(s, t);
    ANALYZE livelab_changed;

    DELETE FROM rollup_15m r USING (SELECT DISTINCT series_id, b15 FROM livelab_changed) k
    WHERE r.series_id = k.series_id AND r.bucket = k.b15;
    INSERT INTO rollup_15m (series_id, bucket, n, total, lo, hi)
    SELECT k.series_id, k.b15, count(*), sum(x.value), min(x.value), max(x.value)
    FROM (SELECT DISTINCT series_id, b15 FROM livelab_changed) k
    JOIN readings x ON x.series_id = k.series_id
                   AND x.time >= k.b15 AND x.time < k.b15 + INTERVAL '15 minutes'
    GROUP BY 1, 2;

    DELETE FROM rollup_1h r USING (SELECT DISTINCT series_id, b1h FROM livelab_changed) k
    WHERE r.series_id = k.series_id AND r.bucket = k.b1h;
    INSERT INTO rollup_1h (series_id, bucket, n, total, lo, hi)
    SELECT k.series_id, k.b1h, sum(p.n), sum(p.total), min(p.lo), max(p.hi)
    FROM (SELECT DISTINCT series_id, b1h FROM livelab_changed) k
    JOIN rollup_15m p ON p.series_id = k.series_id
                     AND p.bucket >= k.b1h AND p.bucket < k.b1h + INTERVAL '1 hour'
    GROUP BY 1, 2;

    DELETE FROM rollup_1d r USING (SELECT DISTINCT series_id, b1d FROM livelab_changed) k
    WHERE r.series_id = k.series_id AND r.bucket = k.b1d;
    INSERT INTO rollup_1d (series_id, bucket, n, total, lo, hi)
    SELECT k.series_id, k.b1d, sum(p.n), sum(p.total), min(p.lo), max(p.hi)
    FROM (SELECT DISTINCT series_id, b1d FROM livelab_changed) k
    JOIN rollup_15m p ON p.series_id = k.series_id
                     AND p.bucket >= k.b1d - INTERVAL '1 day' AND p.bucket < k.b1d + INTERVAL '2 days'
                     AND time_bucket(INTERVAL '1 day', p.bucket, tz) = k.b1d
    GROUP BY 1, 2;
END
$$;

CREATE FUNCTION livelab_rollups_statement() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    sids integer[];
    ts timestamptz[];
BEGIN
    IF TG_OP = 'UPDATE' THEN
        SELECT array_agg(c.series_id), array_agg(c.time) INTO sids, ts
        FROM (SELECT series_id, time FROM old_rows UNION SELECT series_id, time FROM new_rows) c;
    ELSE
        SELECT array_agg(series_id), array_agg(time) INTO sids, ts FROM old_rows;
    END IF;
    IF sids IS NOT NULL THEN
        PERFORM livelab_rollups_recompute(sids, ts);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION livelab_rollups_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        PERFORM livelab_rollups_recompute(ARRAY[OLD.series_id, NEW.series_id],
                                          ARRAY[OLD.time, NEW.time]);
    ELSE
        PERFORM livelab_rollups_recompute(ARRAY[OLD.series_id], ARRAY[OLD.time]);
    END IF;
    RETURN NULL;
END
$$;

DROP FUNCTION livelab_rollups_refresh(integer, timestamptz);

DO $$
DECLARE
    v text := (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb');
BEGIN
    IF (split_part(v, '.', 1)::int, split_part(v, '.', 2)::int) >= (2, 18) THEN
        DROP TRIGGER readings_rollups ON readings;
        CREATE TRIGGER readings_rollups_delete AFTER DELETE ON readings
        REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION livelab_rollups_statement();
        CREATE TRIGGER readings_rollups_update AFTER UPDATE ON readings
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION livelab_rollups_statement();
    END IF;
END
$$;
