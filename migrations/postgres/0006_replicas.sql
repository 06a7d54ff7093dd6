-- Replicas sharing the sources with fenced leases (src/store/postgres/leases.rs).
--   leases    one row per rate-limit scope (a HighLevel location, a Spruce organization, a
--             Sinch project, a D365 org): who runs its sources, under which epoch (the
--             fencing token every write of the scope's sources re-checks before it commits),
--             until when by the database's clock, and the rate-limit state the last owner
--             left so that the next one does not burst.
--   replicas  one row per running replica, its heartbeat: how many replicas share the scopes.
--   sync_runs.replica / epoch   the replica and lease epoch a run ran under (NULL when not
--             leased); last_commit_at  the run's latest committed write, so that the runs of
--             one scope can be shown never to overlap.
CREATE TABLE leases (
    scope       text        PRIMARY KEY,
    sources     text[]      NOT NULL,
    owner       text,
    epoch       bigint      NOT NULL DEFAULT 0,
    acquired_at timestamptz,
    expires_at  timestamptz,
    rate_limit  jsonb,
    released_at timestamptz
);

CREATE TABLE replicas (
    name         text        PRIMARY KEY,
    started_at   timestamptz,
    last_seen_at timestamptz
);

ALTER TABLE sync_runs ADD COLUMN replica text;
ALTER TABLE sync_runs ADD COLUMN epoch bigint;
ALTER TABLE sync_runs ADD COLUMN last_commit_at timestamptz;
