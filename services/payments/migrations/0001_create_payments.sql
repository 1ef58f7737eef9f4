-- Payment intents. Amounts are integer minor units of `currency` (cents; yen for JPY). What was
-- captured and refunded is not stored here: it is the sum of the payment's ledger entries.
CREATE TABLE payments (
    id                  UUID PRIMARY KEY,
    order_id            UUID NOT NULL,
    customer_id         UUID NOT NULL,
    status              TEXT NOT NULL CHECK (status IN
                            ('authorized', 'declined', 'voided', 'captured',
                             'partially_refunded', 'refunded')),
    currency            TEXT NOT NULL CHECK (length(currency) = 3),
    authorized_minor    BIGINT NOT NULL CHECK (authorized_minor > 0),
    processor_reference TEXT NOT NULL DEFAULT '',
    failure_reason      TEXT NOT NULL DEFAULT '',
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX payments_order_id ON payments (order_id);

-- The append-only ledger: one row per money movement, written in the same transaction as the
-- payment's change. The idempotency key is unique, so one request can move money only once.
CREATE TABLE ledger_entries (
    id              BIGSERIAL PRIMARY KEY,
    payment_id      UUID NOT NULL REFERENCES payments (id),
    kind            TEXT NOT NULL CHECK (kind IN ('authorization', 'capture', 'void', 'refund')),
    amount_minor    BIGINT NOT NULL CHECK (amount_minor > 0),
    currency        TEXT NOT NULL CHECK (length(currency) = 3),
    idempotency_key TEXT NOT NULL UNIQUE,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX ledger_entries_payment_id ON ledger_entries (payment_id);

CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only';
END;
$$;

CREATE TRIGGER ledger_entries_append_only
    BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();

-- Every mutating call by its idempotency key: the request it carried (to refuse the key with
-- another request) and, once done, the answer it got (returned to every retry). A pending row
-- is an operation whose processor outcome is not known yet; at most one per payment, so two
-- operations never race at the processor.
CREATE TABLE idempotency_keys (
    key          TEXT PRIMARY KEY,
    operation    TEXT NOT NULL CHECK (operation IN ('authorize', 'capture', 'void', 'refund')),
    request      TEXT NOT NULL,
    payment_id   UUID NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    result       BYTEA,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at TIMESTAMPTZ,
    CHECK ((state = 'done') = (result IS NOT NULL))
);

CREATE UNIQUE INDEX idempotency_keys_one_pending_per_payment
    ON idempotency_keys (payment_id) WHERE state = 'pending';
