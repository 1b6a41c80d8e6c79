-- The change log: every change to an account or its scopes appends the
-- account's lower-cased name, by trigger, in the same transaction. A
-- running server keeps an exact in-memory copy of recently used accounts;
-- when it sees that something committed (the WAL-index header changed, see
-- src/store/wal_index.rs) it reads the entries after the last one it has
-- seen and drops only those accounts from memory. This is what carries a
-- grant, revoke or delete made by another process (`rpcguard user …`
-- while the server runs) to the server's very next call. Old entries are
-- purged by the server (src/store/cached.rs).
CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT    NOT NULL,
    at  INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER))
);

CREATE TRIGGER users_changed_insert AFTER INSERT ON users
BEGIN
    INSERT INTO changes (key) VALUES (NEW.username_key);
END;

CREATE TRIGGER users_changed_update AFTER UPDATE ON users
BEGIN
    INSERT INTO changes (key) VALUES (OLD.username_key);
    INSERT INTO changes (key) SELECT NEW.username_key WHERE NEW.username_key <> OLD.username_key;
END;

CREATE TRIGGER users_changed_delete AFTER DELETE ON users
BEGIN
    INSERT INTO changes (key) VALUES (OLD.username_key);
END;

-- A scope row whose account is already gone (deleted with it, by cascade)
-- logs nothing: the account's own delete did.
CREATE TRIGGER user_scopes_changed_insert AFTER INSERT ON user_scopes
BEGIN
    INSERT INTO changes (key) SELECT username_key FROM users WHERE id = NEW.user_id;
END;

CREATE TRIGGER user_scopes_changed_update AFTER UPDATE ON user_scopes
BEGIN
    INSERT INTO changes (key) SELECT username_key FROM users WHERE id IN (OLD.user_id, NEW.user_id);
END;

CREATE TRIGGER user_scopes_changed_delete AFTER DELETE ON user_scopes
BEGIN
    INSERT INTO changes (key) SELECT username_key FROM users WHERE id = OLD.user_id;
END;
