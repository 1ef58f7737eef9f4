-- Baseline. IF NOT EXISTS only so that databases whose table was created by the unversioned
-- DDL this crate used to run adopt this version without error; later migrations are plain.
-- Transactional outbox (shop-outbox). Rows are written in the business transaction and
-- published to JetStream by the relay; published_at is set in the relay's claiming transaction.
CREATE TABLE IF NOT EXISTS outbox (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     uuid        NOT NULL UNIQUE,
    subject      text        NOT NULL,
    event_type   text        NOT NULL,
    headers      jsonb       NOT NULL,
    payload      bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
-- The relay's claim: unpublished rows in id order.
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
-- Retention cleanup.
CREATE INDEX IF NOT EXISTS outbox_published_at ON outbox (published_at)
    WHERE published_at IS NOT NULL;
