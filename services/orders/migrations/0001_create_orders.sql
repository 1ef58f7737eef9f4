-- The order aggregate is event-sourced: order_events is the truth, append-only, one stream per
-- order, versions 1, 2, 3... without gaps. The primary key is the optimistic concurrency check:
-- two writers that read version n both try to append n + 1 and only one commits.
CREATE TABLE order_events (
    order_id    uuid        NOT NULL,
    version     bigint      NOT NULL CHECK (version > 0),
    type        text        NOT NULL,
    payload     jsonb       NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, version)
);

-- The read model (CQRS): the folded state of each order, written in the transaction that
-- appends its events, for GetOrder and ListOrders. It can be dropped and rebuilt from
-- order_events at any time (orders-projection rebuild).
CREATE TABLE orders (
    order_id    uuid        PRIMARY KEY,
    customer_id uuid        NOT NULL,
    status      text        NOT NULL,
    version     bigint      NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    body        jsonb       NOT NULL
);

CREATE INDEX orders_by_customer ON orders (customer_id, created_at DESC, order_id DESC);
CREATE INDEX orders_by_status ON orders (status, updated_at);

-- PlaceOrder's idempotency keys, scoped to the customer: the request they were first used with
-- and the order it made.
CREATE TABLE order_keys (
    customer_id     uuid        NOT NULL,
    idempotency_key text        NOT NULL,
    request         jsonb       NOT NULL,
    order_id        uuid        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, idempotency_key)
);
