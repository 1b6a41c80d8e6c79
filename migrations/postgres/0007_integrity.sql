-- Session integrity (issue 24). `credentials_epoch` moves on with every
-- event that must end what the old credentials proved: a password change,
-- disabling the account, and ending every session of the user (sign out
-- everywhere, `rpcguard user sign-out`). `sign_in` reads it with the hash
-- and opens its session only if it is still the same, locking the account
-- row (FOR SHARE) in the same statement, so a sign-in racing such an
-- event on any instance either sees the new epoch and is refused, or
-- commits first and has its session ended by the event.
ALTER TABLE users ADD COLUMN credentials_epoch BIGINT NOT NULL DEFAULT 0;

-- Settings the server publishes for the CLI and the other instances:
-- today `bcrypt_cost`, the cost the server hashes at, so `rpcguard user
-- add` hashes at the same cost as the server's dummy hash.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
