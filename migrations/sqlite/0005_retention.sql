-- Retention of personal data ([retention], `convsync purge`, src/store/retention.rs).
--   conversations.redacted_at  when retention cleared the row's `raw` and contact columns;
--              a later change from the provider rewrites them (last_changed_at > redacted_at).
--   retention_purges  one row per source per applied purge that removed or cleared anything:
--              the counts, so that an audit can show what was purged and when.
ALTER TABLE conversations ADD COLUMN redacted_at TEXT;

CREATE TABLE retention_purges (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    purged_at               TEXT    NOT NULL,
    source                  TEXT    NOT NULL,
    conversations_redacted  INTEGER NOT NULL,
    conversations_deleted   INTEGER NOT NULL,
    rejected_records_deleted INTEGER NOT NULL,
    sync_runs_deleted       INTEGER NOT NULL
);
