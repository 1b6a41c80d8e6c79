-- The token signing keys (issue 12) of every instance sharing this
-- database: the same key set as `<data-dir>/keys.json` on SQLite, one row
-- per key, oldest first by `seq`. `material` is the private key (base64url:
-- the HMAC secret, PKCS#8 or PKCS#1 DER), as sensitive as keys.json: whoever
-- can read this table can sign tokens for any account. Only the table's
-- owner (the role rpcguard migrates with) and superusers can read it; grant
-- nothing on it to other roles.
CREATE TABLE signing_keys (
    seq      BIGSERIAL PRIMARY KEY,
    kid      TEXT      NOT NULL UNIQUE,
    alg      TEXT      NOT NULL CHECK (alg IN ('HS256', 'EdDSA', 'ES256', 'RS256')),
    created  BIGINT    NOT NULL,
    -- NULL while the key signs; else when it stopped (it verifies for one
    -- token lifetime plus the reload slack after that).
    retired  BIGINT,
    -- When a key rotated in starts signing (NULL: from `created`): it is
    -- published a few seconds ahead, so every instance verifies its tokens
    -- before any instance signs with it; the key it replaces is retired then.
    signs_from BIGINT,
    -- Also verifies tokens without a `kid` (a secret from before key sets).
    legacy   BOOLEAN   NOT NULL DEFAULT FALSE,
    material TEXT      NOT NULL
);
REVOKE ALL ON signing_keys FROM PUBLIC;

-- At most one key signs.
CREATE UNIQUE INDEX signing_keys_one_signing ON signing_keys ((TRUE)) WHERE retired IS NULL;

-- Every change to the set (a rotation, a prune, the first set) is announced
-- on `rpcguard_users` as `k:` (a username never contains ':'): each
-- instance then reads the set again, so a rotation made anywhere reaches
-- every instance without a restart. Instances also poll the set every
-- second, in case a notification is missed.
CREATE OR REPLACE FUNCTION rpcguard_notify_keys_change() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('rpcguard_users', 'k:');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER signing_keys_notify AFTER INSERT OR UPDATE OR DELETE ON signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION rpcguard_notify_keys_change();
