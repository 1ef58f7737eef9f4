-- One shipment per confirmed order (order_id is unique: a second OrderConfirmed for the same
-- order, under a new event id, schedules nothing). due_at is when the sweeper moves it next
-- (pickup, then delivery); NULL once it is final.
CREATE TABLE shipments (
    id                    UUID PRIMARY KEY,
    order_id              UUID NOT NULL UNIQUE,
    customer_id           TEXT NOT NULL,
    status                TEXT NOT NULL
                          CHECK (status IN ('scheduled', 'in_transit', 'delivered', 'cancelled')),
    carrier               TEXT NOT NULL,
    tracking_number       TEXT NOT NULL UNIQUE,
    recipient_name        TEXT NOT NULL,
    line1                 TEXT NOT NULL,
    line2                 TEXT NOT NULL,
    city                  TEXT NOT NULL,
    region                TEXT NOT NULL,
    postal_code           TEXT NOT NULL,
    country_code          TEXT NOT NULL,
    cost_minor            BIGINT NOT NULL CHECK (cost_minor >= 0),
    currency_code         TEXT NOT NULL,
    estimated_delivery_at TIMESTAMPTZ NOT NULL,
    due_at                TIMESTAMPTZ,
    picked_up_at          TIMESTAMPTZ,
    delivered_at          TIMESTAMPTZ,
    cancel_reason         TEXT,
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT shipments_due_while_moving
        CHECK ((due_at IS NOT NULL) = (status IN ('scheduled', 'in_transit'))),
    CONSTRAINT shipments_delivered_at
        CHECK ((delivered_at IS NOT NULL) = (status = 'delivered')),
    CONSTRAINT shipments_picked_up_at
        CHECK ((picked_up_at IS NOT NULL) = (status IN ('in_transit', 'delivered')))
);

-- The sweeper's scan: shipments still moving, by when their next step is due.
CREATE INDEX shipments_due ON shipments (due_at) WHERE due_at IS NOT NULL;

-- The contents of a shipment; one row per product.
CREATE TABLE shipment_lines (
    shipment_id UUID NOT NULL REFERENCES shipments (id),
    product_id  UUID NOT NULL,
    quantity    BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (shipment_id, product_id)
);

-- Orders known to be cancelled. OrderCancelled may be handled before the same order's
-- OrderConfirmed (several consumers, redeliveries): a cancelled order is never shipped.
CREATE TABLE cancelled_orders (
    order_id     UUID PRIMARY KEY,
    cancelled_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
