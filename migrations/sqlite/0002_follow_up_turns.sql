-- convsync mirror schema, version 2: an index for the follow-up phase.
-- Each cycle takes a source's queued follow-ups fewest attempts first, then oldest. Without
-- this index every batch sorted the whole queue: a first Spruce sync queues one follow-up
-- per conversation, so a 100 000-conversation backfill sorted 100 000 rows 200 times.
CREATE INDEX follow_ups_by_turn ON follow_ups (source, attempts, queued_at);
