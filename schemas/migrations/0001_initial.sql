-- livelab schema, version 1.
-- Applied by `livelab-migrate` (schemas/migrate.py) in one transaction, under an advisory lock.

CREATE EXTENSION IF NOT EXISTS timescaledb;

-- The series registry: one row per (lab, device, sensor). Readings refer to it by a small
-- integer id, so a reading row is 4 + 8 + 8 bytes of data instead of three text columns.
-- first_time, last_time and reading_count are kept up to date by the ingest writer in the
-- same transaction that stores the readings.
CREATE TABLE series (
    id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lab           text NOT NULL,
    device        text NOT NULL,
    sensor        text NOT NULL,
    unit          text,
    first_time    timestamptz,
    last_time     timestamptz,
    reading_count bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT series_name_unique UNIQUE (lab, device, sensor)
);

-- Readings: exactly once per (series, time). The primary key is what makes a redelivered or
-- duplicated reading change nothing (INSERT ... ON CONFLICT DO NOTHING: the first value wins).
-- No foreign key to series: series rows are never deleted, and the check would cost every insert.
CREATE TABLE readings (
    series_id integer          NOT NULL,
    time      timestamptz      NOT NULL,
    value     double precision NOT NULL,
    CONSTRAINT readings_pkey PRIMARY KEY (series_id, time)
);
-- The primary key serves every query (they all name series); the default time index would only
-- slow inserts down.
SELECT create_hypertable('readings', by_range('time', INTERVAL '7 days'),
                         create_default_indexes => false);

-- Messages (or parts of messages) that could not be stored, with the reason in plain words.
CREATE TABLE rejections (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at    timestamptz NOT NULL,
    lab            text,                -- NULL when the topic named no valid lab
    device         text,
    topic          text NOT NULL,
    reason         text NOT NULL,
    rejected_count integer NOT NULL DEFAULT 1,  -- readings (or whole messages) this row covers
    payload        bytea NOT NULL,      -- the first bytes of the payload (bounded, see settings)
    payload_size   integer NOT NULL     -- the payload's full size in bytes
);
CREATE INDEX rejections_lab_id ON rejections (lab, id DESC);

-- API keys: only a SHA-256 of the key is stored. `labs` is the scope; '*' means every lab.
CREATE TABLE api_keys (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL,
    prefix      text NOT NULL,         -- the key's first characters, to tell keys apart in lists
    key_hash    bytea NOT NULL UNIQUE,
    labs        text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
