-- Sessions (issue 11). Every sign_in opens one; its access tokens name it
-- (claim `sid`) and its refresh tokens belong to it. A refresh token is
-- stored only as the SHA-256 of its 256 random bits, one row per token ever
-- issued (`generation` 0, 1, 2, … as it is rotated): the session's current
-- `generation` is the only one `refresh` accepts, and presenting an older
-- one is reuse, which ends the session. Ending is for good (`ended_at`).
ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;

CREATE TABLE sessions (
    id                 TEXT    PRIMARY KEY,
    user_id            INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- NULL: no limit; else the space-separated scopes the session may use.
    scope_limit        TEXT,
    generation         INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL,
    refresh_expires_at INTEGER NOT NULL,
    ended_at           INTEGER
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE refresh_tokens (
    hash       TEXT    PRIMARY KEY,
    session_id TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    generation INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- The change log covers the end of a session as `s:<session id>` (a
-- username never contains ':'), so a server drops that session from its
-- in-memory auth state, whichever process ended it. Rotation changes only
-- `generation` and logs nothing: it changes no answer of the auth check.
CREATE TRIGGER sessions_changed_end AFTER UPDATE OF ended_at ON sessions
WHEN OLD.ended_at IS NOT NEW.ended_at
BEGIN
    INSERT INTO changes (key) VALUES ('s:' || NEW.id);
END;
