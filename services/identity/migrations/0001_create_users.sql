-- Users and their argon2id password hashes (PHC strings, salt included).
CREATE TABLE users (
    id            UUID PRIMARY KEY,
    -- Stored lower-cased and trimmed: one account per mailbox.
    email         TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Ed25519 keys that sign access tokens. The newest unretired key signs; every unretired key
-- is published in the JWKS so tokens signed before a rotation stay verifiable.
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    private_key BYTEA NOT NULL CHECK (length(private_key) = 32),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    retired_at  TIMESTAMPTZ
);
