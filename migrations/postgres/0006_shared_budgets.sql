-- Rate budgets shared by every server instance on this database (the
-- sign-in and sign-up throttle, issue 14): one row per key, holding the
-- GCRA "theoretical arrival time" in microseconds since the epoch on the
-- database's clock. A key whose `tat` is in the past has its whole burst
-- back and is deleted by the minute's upkeep, so the table holds only keys
-- drawn from within the last period. UNLOGGED: a crash of the database
-- resets the budgets (every key gets its burst again) and nothing else;
-- in exchange a draw writes no WAL.
CREATE UNLOGGED TABLE shared_budgets (
    key TEXT   PRIMARY KEY,
    tat BIGINT NOT NULL
);
