-- livelab schema, version 2: form-1 receipts (exactly once across redeliveries) and bounded,
-- merged rejections. See README "Exactly once" and "Rejections".

-- How many QoS 1 messages each ingest client (MQTT client id = persistent session) has
-- committed. A receipt remembers this count at its commit, which tells a redelivery of the
-- receipt's own message from a later message that reuses the same packet id (see
-- ingest/receipts.py for the argument).
CREATE TABLE ingest_clients (
    client_id text PRIMARY KEY,
    committed bigint NOT NULL DEFAULT 0
);

-- One row per (client, packet id): the last committed message that took the receive time as
-- (part of) its readings' time (telemetry form 1, SenML relative times). A redelivered copy
-- (MQTT DUP flag, same packet id) reuses `received_at`, so it changes nothing. Bounded by the
-- packet id space: at most 65 535 rows per client id.
CREATE TABLE ingest_receipts (
    client_id   text        NOT NULL,
    mid         integer     NOT NULL,
    digest      bytea       NOT NULL,   -- BLAKE2b-128 of topic and payload
    received_at timestamptz NOT NULL,   -- the receive time of the first delivery
    seq         bigint      NOT NULL,   -- ingest_clients.committed after this commit
    PRIMARY KEY (client_id, mid)
);

-- Rejections: a device repeating the same reason within one merge interval is one row with a
-- count. `repeats` is the number of messages a row stands for, `last_received_at` the newest.
-- A NULL `last_received_at` means the same as `received_at` (a row of one message).
ALTER TABLE rejections ADD COLUMN repeats integer NOT NULL DEFAULT 1;
ALTER TABLE rejections ADD COLUMN last_received_at timestamptz;
-- merge_key: a hash of (lab, device, topic, reason); merge_window: the interval's start. NULL
-- merge keys (merging off) never conflict.
ALTER TABLE rejections ADD COLUMN merge_key bytea;
ALTER TABLE rejections ADD COLUMN merge_window timestamptz;
CREATE UNIQUE INDEX rejections_merge ON rejections (merge_key, merge_window);
-- Retention deletes by age.
CREATE INDEX rejections_received_at ON rejections (received_at);
