-- Sessions (issue 11). Every sign_in opens one; its access tokens name it
-- (claim `sid`) and its refresh tokens belong to it. A refresh token is
-- stored only as the SHA-256 of its 256 random bits, one row per token ever
-- issued (`generation` 0, 1, 2, … as it is rotated): the session's current
-- `generation` is the only one `refresh` accepts, and presenting an older
-- one is reuse, which ends the session. Ending is for good (`ended_at`).
ALTER TABLE users ADD COLUMN disabled BIGINT NOT NULL DEFAULT 0;

CREATE TABLE sessions (
    id                 TEXT   PRIMARY KEY,
    user_id            BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- NULL: no limit; else the space-separated scopes the session may use.
    scope_limit        TEXT,
    generation         BIGINT NOT NULL DEFAULT 0,
    created_at         BIGINT NOT NULL,
    refresh_expires_at BIGINT NOT NULL,
    ended_at           BIGINT
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE refresh_tokens (
    hash       TEXT   PRIMARY KEY,
    session_id TEXT   NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    generation BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- The end of a session is announced on `rpcguard_users` as
-- `s:<session id>` (a username never contains ':'), so every instance drops
-- that session from its in-memory auth state. Rotation changes only
-- `generation` and announces nothing.
CREATE OR REPLACE FUNCTION rpcguard_notify_session_end() RETURNS trigger AS $$
BEGIN
    IF NEW.ended_at IS DISTINCT FROM OLD.ended_at THEN
        PERFORM pg_notify('rpcguard_users', 's:' || NEW.id);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER sessions_notify AFTER UPDATE OF ended_at ON sessions
    FOR EACH ROW EXECUTE FUNCTION rpcguard_notify_session_end();
