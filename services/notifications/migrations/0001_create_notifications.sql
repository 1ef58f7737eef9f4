-- Notifications shown to users, one per source event (the unique source_event_id makes a
-- redelivered event harmless even without the inbox).
CREATE TABLE notifications (
    id              UUID PRIMARY KEY,
    user_id         UUID NOT NULL,
    kind            SMALLINT NOT NULL,
    title           TEXT NOT NULL,
    body            TEXT NOT NULL,
    order_id        UUID,
    source_event_id UUID NOT NULL UNIQUE,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX notifications_user_id ON notifications (user_id, id DESC);

-- Every delivery attempt of a notification to a channel (in-app today; email and push are
-- further channels with their own rows).
CREATE TABLE delivery_log (
    id              BIGSERIAL PRIMARY KEY,
    notification_id UUID NOT NULL REFERENCES notifications (id),
    channel         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempted_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX delivery_log_notification_id ON delivery_log (notification_id);
