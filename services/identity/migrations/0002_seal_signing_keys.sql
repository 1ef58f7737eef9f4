-- Signing keys at rest: the private half sealed (AES-256-GCM) under a key-encryption key
-- from the service's configuration, the public half beside it for GetJwks. A row holds its
-- private half either sealed (sealed_key + kek_id) or, when no key-encryption key is
-- configured, in clear (private_key); a retired row holds neither.
ALTER TABLE signing_keys
    ALTER COLUMN private_key DROP NOT NULL,
    ADD COLUMN public_key BYTEA CHECK (length(public_key) = 32),
    ADD COLUMN sealed_key BYTEA,
    ADD COLUMN kek_id     TEXT;

-- Retired keys verify nothing any more: their private halves go.
UPDATE signing_keys SET private_key = NULL WHERE retired_at IS NOT NULL;

ALTER TABLE signing_keys
    ADD CONSTRAINT signing_keys_material CHECK (
        (retired_at IS NOT NULL AND private_key IS NULL AND sealed_key IS NULL)
        OR (retired_at IS NULL AND (private_key IS NULL) <> (sealed_key IS NULL))
    ),
    ADD CONSTRAINT signing_keys_sealed_by CHECK ((sealed_key IS NULL) = (kek_id IS NULL));
