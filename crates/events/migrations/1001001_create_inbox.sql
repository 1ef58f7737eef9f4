-- Baseline. IF NOT EXISTS only so that databases whose table was created by the unversioned
-- DDL this crate used to run adopt this version without error; later migrations are plain.
-- Idempotent consumer inbox (shop-events). One row per (consumer, event) applied.
-- Written in the same transaction as the handler's effect; a redelivered event finds its row
-- and is acked without a second effect.
CREATE TABLE IF NOT EXISTS inbox (
    consumer     text        NOT NULL,
    event_id     uuid        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS inbox_processed_at ON inbox (processed_at);
