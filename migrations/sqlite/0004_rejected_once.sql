-- convsync mirror schema: a rejected item is recorded once per (source, walk, item).
-- A walk re-reads the same bad item on every cycle; a row per sighting grew the table
-- without telling anything new. `item_hash` (BLAKE3 of the item's raw JSON) identifies the
-- item, `times_seen` and `last_seen_at` say how often and how recently it came back, and
-- `rejected_at` stays the first sighting. Retention removes rows by `last_seen_at`.
ALTER TABLE rejected_records ADD COLUMN item_hash TEXT;
ALTER TABLE rejected_records ADD COLUMN times_seen INTEGER NOT NULL DEFAULT 1;
ALTER TABLE rejected_records ADD COLUMN last_seen_at TEXT;

-- Earlier sightings of one item fold into its first row. (Rows from before this version
-- carry no hash: the item's next sighting starts a hashed row, and the old one ages out.)
UPDATE rejected_records AS r
SET times_seen = g.n, last_seen_at = g.last
FROM (
    SELECT MIN(id) AS keep, COUNT(*) AS n, MAX(rejected_at) AS last
    FROM rejected_records GROUP BY source, walk, raw
) AS g
WHERE r.id = g.keep;
DELETE FROM rejected_records
WHERE id NOT IN (SELECT MIN(id) FROM rejected_records GROUP BY source, walk, raw);
UPDATE rejected_records SET last_seen_at = rejected_at WHERE last_seen_at IS NULL;

CREATE UNIQUE INDEX rejected_records_by_item ON rejected_records (source, walk, item_hash);
CREATE INDEX rejected_records_by_age ON rejected_records (source, last_seen_at);
