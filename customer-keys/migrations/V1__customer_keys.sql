-- One data key per customer. A forgotten customer keeps a row with no key, so that their key is
-- never created again and new personal data for them is refused.
CREATE TABLE customer_keys (
    key_id       text PRIMARY KEY,
    key          bytea CHECK (key IS NULL OR length(key) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    forgotten_at timestamptz,
    CHECK ((key IS NULL) = (forgotten_at IS NOT NULL))
);
