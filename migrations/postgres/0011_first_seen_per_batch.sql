-- Schema version 11 on PostgreSQL: nothing to change. SQLite's 0011 replaces its row
-- trigger on insert with one `first_seen` statement per batch of new rows; PostgreSQL's
-- `conversation_first_seen` is a statement trigger already (one `INSERT … SELECT` from
-- the statement's new rows), so it stays, and says so in the catalog.
COMMENT ON TRIGGER conversation_first_seen ON conversations IS
    'first_seen events, one INSERT ... SELECT per statement; SQLite writes them per batch '
    'in src/store/sqlite/prepared.rs (migration 0011)';
