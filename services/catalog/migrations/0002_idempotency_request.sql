-- What the first CreateProduct with a key asked for, so a reuse of the key for a different
-- request is refused instead of answered with an unrelated product. NULL for products made
-- before this column existed (their retries are still answered).
ALTER TABLE products ADD COLUMN idempotency_request BYTEA;
