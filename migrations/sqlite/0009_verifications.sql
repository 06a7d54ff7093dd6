-- One row per `convsync verify` (or scheduled verification) of one source: the mirror
-- checked against the provider's listing without writing the mirror (docs/schema.md,
-- "Verifications"). Written only when the verification finished; nothing else writes it.
--   mode              full (the whole listing) | sample (N mirrored ids looked for)
--   walk              the listing walked (the provider's sweep)
--   checked           conversations compared (listed ones in full mode, the sample's size
--                     in sample mode)
--   missing … deleted_listed   drift found, per kind
--   verified_through  the instant up to which the mirror is proven to match (the
--                     verification's start) when it found no drift; NULL otherwise
--   requests          requests sent to the provider
CREATE TABLE verifications (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    source           TEXT    NOT NULL,
    started_at       TEXT    NOT NULL,
    finished_at      TEXT    NOT NULL,
    mode             TEXT    NOT NULL,
    walk             TEXT    NOT NULL,
    checked          INTEGER NOT NULL,
    missing          INTEGER NOT NULL,
    stale            INTEGER NOT NULL,
    extra            INTEGER NOT NULL,
    deleted_listed   INTEGER NOT NULL,
    verified_through TEXT,
    requests         INTEGER NOT NULL
);
CREATE INDEX verifications_by_source ON verifications (source, id);
