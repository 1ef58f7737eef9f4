-- Stock per product. The invariant on_hand = available + reserved + committed, and no count
-- below zero, is the schema's: a statement that would break it fails, whatever the code does.
CREATE TABLE stock (
    product_id UUID PRIMARY KEY,
    on_hand    BIGINT NOT NULL CHECK (on_hand >= 0),
    available  BIGINT NOT NULL CHECK (available >= 0),
    reserved   BIGINT NOT NULL CHECK (reserved >= 0),
    committed  BIGINT NOT NULL CHECK (committed >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT stock_conserved CHECK (on_hand = available + reserved + committed)
);

-- Every change of on_hand, keyed by the caller's idempotency key. The stock level right after
-- the change is kept so that a retry returns the first call's answer.
CREATE TABLE stock_adjustments (
    idempotency_key TEXT PRIMARY KEY,
    product_id      UUID NOT NULL REFERENCES stock (product_id),
    delta           BIGINT NOT NULL CHECK (delta <> 0),
    reason          TEXT NOT NULL,
    on_hand         BIGINT NOT NULL,
    available       BIGINT NOT NULL,
    reserved        BIGINT NOT NULL,
    committed       BIGINT NOT NULL,
    stock_updated_at TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Holds of stock for orders, keyed by the caller's reservation id.
CREATE TABLE reservations (
    id             UUID PRIMARY KEY,
    order_id       UUID NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('reserved', 'released', 'committed')),
    release_reason TEXT,
    expires_at     TIMESTAMPTZ NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The sweeper's scan: open reservations by expiry.
CREATE INDEX reservations_open_by_expiry ON reservations (expires_at) WHERE status = 'reserved';

-- The lines of a reservation; one per product.
CREATE TABLE reservation_lines (
    reservation_id UUID NOT NULL REFERENCES reservations (id),
    product_id     UUID NOT NULL REFERENCES stock (product_id),
    quantity       BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (reservation_id, product_id)
);
