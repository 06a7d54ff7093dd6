-- The columns PostgreSQL's replicas record in sync_runs (migrations/postgres/0006), kept on
-- SQLite too so that both backends answer the same report queries. A SQLite file has one
-- daemon (its lock file), so replica and epoch stay NULL here.
--   sync_runs.replica / epoch   the replica and lease epoch a run ran under (NULL: not leased)
--   sync_runs.last_commit_at    the run's latest committed write (page, absences, follow-ups)
ALTER TABLE sync_runs ADD COLUMN replica TEXT;
ALTER TABLE sync_runs ADD COLUMN epoch INTEGER;
ALTER TABLE sync_runs ADD COLUMN last_commit_at TEXT;
