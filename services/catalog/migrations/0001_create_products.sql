-- Products with their current price. Ids are UUIDv7, so id order is creation order and
-- serves as the keyset for paging.
CREATE TABLE products (
    id              UUID PRIMARY KEY,
    sku             TEXT NOT NULL UNIQUE,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    category        TEXT NOT NULL,
    price_units     BIGINT NOT NULL CHECK (price_units >= 0),
    price_nanos     INTEGER NOT NULL CHECK (price_nanos BETWEEN 0 AND 999999999),
    currency_code   CHAR(3) NOT NULL,
    version         BIGINT NOT NULL DEFAULT 1,
    -- A retried CreateProduct with the same key returns the product it made the first time.
    idempotency_key TEXT UNIQUE,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    search          TSVECTOR GENERATED ALWAYS AS (
        setweight(to_tsvector('simple', name), 'A')
        || setweight(to_tsvector('simple', description), 'B')
        || setweight(to_tsvector('simple', category), 'C')
    ) STORED
);

CREATE INDEX products_category_id ON products (category, id);
CREATE INDEX products_search ON products USING GIN (search);
