-- Per-row failure accounting for the relay (shop-outbox). A row the server refuses (too large,
-- invalid subject, no stream for it) is retried after next_attempt_at; after the relay's
-- park_after attempts it moves to outbox_dead_letters with its error, so it no longer holds
-- back the rows after it. Connection trouble never counts.
ALTER TABLE outbox
    ADD COLUMN attempts        integer     NOT NULL DEFAULT 0,
    ADD COLUMN last_error      text,
    ADD COLUMN next_attempt_at timestamptz;

-- Parked rows, as they were in outbox plus why; an operator requeues one with
-- shop_outbox::requeue_dead_letter once the cause is fixed.
CREATE TABLE outbox_dead_letters (
    id         bigint      PRIMARY KEY, -- its id in outbox, kept for a requeue
    event_id   uuid        NOT NULL UNIQUE,
    subject    text        NOT NULL,
    event_type text        NOT NULL,
    headers    jsonb       NOT NULL,
    payload    bytea       NOT NULL,
    created_at timestamptz NOT NULL,
    attempts   integer     NOT NULL,
    error      text        NOT NULL,
    parked_at  timestamptz NOT NULL DEFAULT now()
);
