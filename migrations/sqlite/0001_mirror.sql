-- convsync mirror schema, version 1. This schema is a public interface: downstream SQL
-- reports depend on it (see docs/schema.md). Timestamps are UTC text in one fixed format,
-- YYYY-MM-DDTHH:MM:SS.ffffffZ, so text order is time order and SQLite date functions work.

-- One row per conversation per source.
CREATE TABLE conversations (
    source                 TEXT    NOT NULL,  -- configured source name
    conversation_id        TEXT    NOT NULL,  -- provider's conversation id
    provider               TEXT    NOT NULL,  -- d365 | spruce | sinch | highlevel
    account                TEXT    NOT NULL,  -- org / app / location id at the provider
    created_at             TEXT,
    last_activity_at       TEXT,
    active                 INTEGER,           -- 1 open, 0 closed/inactive/archived, NULL unknown
    status                 TEXT,              -- provider's own status word
    channel                TEXT,
    contact_id             TEXT,
    contact_name           TEXT,
    contact_phone          TEXT,
    contact_email          TEXT,
    title                  TEXT,
    assignee               TEXT,
    unread_count           INTEGER,
    last_message_direction TEXT,              -- inbound | outbound | NULL unknown
    last_inbound_at        TEXT,
    last_outbound_at       TEXT,
    awaiting_reply         INTEGER,           -- 1 when the newest message is inbound
    raw                    TEXT    NOT NULL,  -- provider JSON as received
    payload_hash           BLOB    NOT NULL,  -- skips rewrites of unchanged rows
    first_seen_at          TEXT    NOT NULL,
    last_seen_at           TEXT    NOT NULL,  -- last listing that returned it with a change, or last sweep
    last_changed_at        TEXT    NOT NULL,
    run_id                 INTEGER,           -- sync_runs.id that last changed the row
    closed_at              TEXT,
    deleted_at             TEXT,
    PRIMARY KEY (source, conversation_id)
);
CREATE INDEX conversations_by_activity ON conversations (source, last_activity_at);
CREATE INDEX conversations_by_seen ON conversations (source, last_seen_at);
CREATE INDEX conversations_awaiting_reply ON conversations (source, last_inbound_at)
    WHERE awaiting_reply = 1;

-- Where each walk of each source stands (watermark, page position), engine-owned JSON.
CREATE TABLE cursors (
    source     TEXT NOT NULL,
    walk       TEXT NOT NULL,
    state      TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (source, walk)
);

-- One row per cycle: the audit trail of what each sync did.
CREATE TABLE sync_runs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    source         TEXT    NOT NULL,
    started_at     TEXT    NOT NULL,
    finished_at    TEXT,
    outcome        TEXT    NOT NULL DEFAULT 'running', -- running | caught_up | more_to_do | rate_limited | failed | interrupted
    pages          INTEGER NOT NULL DEFAULT 0,
    requests       INTEGER NOT NULL DEFAULT 0,
    rows_inserted  INTEGER NOT NULL DEFAULT 0,
    rows_updated   INTEGER NOT NULL DEFAULT 0,
    rows_unchanged INTEGER NOT NULL DEFAULT 0,
    rows_closed    INTEGER NOT NULL DEFAULT 0,
    rows_deleted   INTEGER NOT NULL DEFAULT 0,
    rows_rejected  INTEGER NOT NULL DEFAULT 0,
    error          TEXT,
    notes          TEXT
);
CREATE INDEX sync_runs_by_source ON sync_runs (source, id);

-- Per-conversation follow-up requests (messages, items), queued with the page that asked.
CREATE TABLE follow_ups (
    source          TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    since           TEXT,
    position        TEXT,
    queued_at       TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (source, conversation_id, kind)
);

-- Records the mirror could not hold, kept with the reason instead of being dropped.
CREATE TABLE rejected_records (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT NOT NULL,
    run_id      INTEGER,
    walk        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    raw         TEXT NOT NULL,
    rejected_at TEXT NOT NULL
);

-- Rotating OAuth refresh tokens (HighLevel): the newest one, committed before use.
CREATE TABLE refresh_tokens (
    vault_key  TEXT PRIMARY KEY,
    token      TEXT NOT NULL,
    rotated_at TEXT NOT NULL
);
