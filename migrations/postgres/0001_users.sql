-- Accounts. `username_key` is the lower-cased name: its UNIQUE constraint is
-- what makes `Alice` and `alice` one account.
CREATE TABLE IF NOT EXISTS users (
    id            BIGSERIAL PRIMARY KEY,
    username      TEXT      NOT NULL,
    username_key  TEXT      NOT NULL UNIQUE,
    password_hash TEXT      NOT NULL,
    created_at    BIGINT    NOT NULL
);

-- Granted Bearer scopes, one row per (user, scope).
CREATE TABLE IF NOT EXISTS user_scopes (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    scope   TEXT   NOT NULL,
    PRIMARY KEY (user_id, scope)
);
