-- A per-account id that is never reused (issue 16, row 8). Every token names
-- it (claim `uid`), so a token never passes for a later account of the same
-- name. New accounts get 128 random bits (32 hex digits) from the server;
-- existing rows, and rows inserted by an older instance during a rolling
-- upgrade, get a random UUID's 32 hex digits from this default (a volatile
-- default is evaluated per row, so the backfill gives every row its own).
ALTER TABLE users
    ADD COLUMN account_id TEXT NOT NULL DEFAULT replace(gen_random_uuid()::text, '-', '');
ALTER TABLE users ADD CONSTRAINT users_account_id_key UNIQUE (account_id);
