-- A per-account id that is never reused (issue 16, row 8). Every token names
-- it (claim `uid`), so a token never passes for a later account of the same
-- name. The integer `id` cannot serve: SQLite hands the largest rowid out
-- again once its row is deleted. Existing accounts get a random id here; new
-- ones get 128 random bits (32 hex digits) from the server.
ALTER TABLE users ADD COLUMN account_id TEXT NOT NULL DEFAULT '';
UPDATE users SET account_id = lower(hex(randomblob(16)));
CREATE UNIQUE INDEX users_account_id ON users (account_id);

-- SQLite cannot add a NOT NULL column without a default; this trigger keeps
-- the empty default from ever being stored.
CREATE TRIGGER users_account_id_required BEFORE INSERT ON users
WHEN NEW.account_id = ''
BEGIN
    SELECT RAISE(ABORT, 'users.account_id is required');
END;
