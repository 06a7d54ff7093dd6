-- Change history (docs/schema.md "Change history"): one row per observed change of a
-- tracked fact of a conversation, written by the triggers below in the transaction that
-- changed the row, whichever path changed it (a listing page, a follow-up's answer, a
-- sweep's absences). No contact data: ids, states, times and the assignee only.
--   conversation_events.seq   increases in commit order (one writer at a time holds
--              SQLite's write lock) and is never reused (AUTOINCREMENT): the change feed's
--              resume position (`convsync changes --after SEQ`).
--   kind       first_seen | activity | assigned | opened | closed | reopened | deleted |
--              restored | unread | awaiting_reply
--   old_value / new_value   the fact before and after, as text (times in the mirror's
--              format, flags as true/false); direction, for activity: inbound or outbound
--              when the row's newest inbound or outbound message is at the new activity
--              time, NULL when the listing does not tell (the follow-up that reads the
--              messages later shows up as an awaiting_reply event)
--              first_seen's new_value: whether the contact waited for a reply when first
--              seen (true | false | NULL unknown), the start of the awaiting_reply series
--   provider_at   the provider's own time of the change where it has one (created_at for
--              first_seen, the new last_activity_at for activity); observed_at: the
--              transaction's time (the row's last_changed_at); run_id: sync_runs.id
--   event_settings   one row: what a backfill writes, `[history] backfill` (first_seen | none)
--   backfilled_sources   the sources whose backfill is over: their first cycle that caught up
CREATE TABLE conversation_events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    source          TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    old_value       TEXT,
    new_value       TEXT,
    direction       TEXT,
    provider_at     TEXT,
    observed_at     TEXT    NOT NULL,
    run_id          INTEGER
);
CREATE INDEX conversation_events_by_conversation
    ON conversation_events (source, conversation_id);

CREATE TABLE event_settings (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    backfill TEXT    NOT NULL CHECK (backfill IN ('first_seen', 'none'))
);
INSERT INTO event_settings (id, backfill) VALUES (1, 'first_seen');

CREATE TABLE backfilled_sources (
    source       TEXT PRIMARY KEY,
    caught_up_at TEXT NOT NULL
);
INSERT INTO backfilled_sources (source, caught_up_at)
    SELECT source, MIN(COALESCE(finished_at, started_at)) FROM sync_runs
    WHERE outcome = 'caught_up' GROUP BY source;

CREATE TRIGGER backfill_over AFTER UPDATE OF outcome ON sync_runs
WHEN NEW.outcome = 'caught_up'
BEGIN
    INSERT OR IGNORE INTO backfilled_sources (source, caught_up_at)
        VALUES (NEW.source, COALESCE(NEW.finished_at, NEW.started_at));
END;

CREATE TRIGGER conversation_first_seen AFTER INSERT ON conversations
WHEN (SELECT backfill FROM event_settings) = 'first_seen'
  OR EXISTS (SELECT 1 FROM backfilled_sources WHERE source = NEW.source)
BEGIN
    INSERT INTO conversation_events
        (source, conversation_id, kind, new_value, provider_at, observed_at, run_id)
        VALUES (NEW.source, NEW.conversation_id, 'first_seen',
                CASE NEW.awaiting_reply WHEN 1 THEN 'true' WHEN 0 THEN 'false' END,
                NEW.created_at, NEW.first_seen_at, NEW.run_id);
END;

-- Fires only for statements that set a tracked column (a sweep's touch of last_seen_at or
-- retention's redaction sets none: no event), and not during the source's backfill: what
-- a backfill's follow-ups fill in is the conversation's first known state, not a change.
CREATE TRIGGER conversation_changed
AFTER UPDATE OF last_activity_at, assignee, active, deleted_at, unread_count, awaiting_reply
ON conversations
WHEN EXISTS (SELECT 1 FROM backfilled_sources WHERE source = NEW.source)
BEGIN
    INSERT INTO conversation_events
        (source, conversation_id, kind, old_value, new_value, direction, provider_at,
         observed_at, run_id)
    SELECT NEW.source, NEW.conversation_id, c.kind, c.old_value, c.new_value, c.direction,
           c.provider_at, NEW.last_changed_at, NEW.run_id
    FROM (
        SELECT 1 AS ord, 'activity' AS kind, OLD.last_activity_at AS old_value,
               NEW.last_activity_at AS new_value,
               CASE NEW.last_activity_at WHEN NEW.last_inbound_at THEN 'inbound'
                                         WHEN NEW.last_outbound_at THEN 'outbound' END
                   AS direction,
               NEW.last_activity_at AS provider_at
        WHERE NEW.last_activity_at IS NOT OLD.last_activity_at
        UNION ALL
        SELECT 2, 'assigned', OLD.assignee, NEW.assignee, NULL, NULL
        WHERE NEW.assignee IS NOT OLD.assignee
        UNION ALL
        SELECT 3, CASE WHEN NEW.active = 0 THEN 'closed'
                       WHEN OLD.active = 0 THEN 'reopened' ELSE 'opened' END,
               CASE OLD.active WHEN 1 THEN 'true' WHEN 0 THEN 'false' END,
               CASE NEW.active WHEN 1 THEN 'true' WHEN 0 THEN 'false' END, NULL, NULL
        WHERE NEW.active IS NOT OLD.active AND NEW.active IS NOT NULL
        UNION ALL
        SELECT 4, CASE WHEN NEW.deleted_at IS NULL THEN 'restored' ELSE 'deleted' END,
               OLD.deleted_at, NEW.deleted_at, NULL, NULL
        WHERE (NEW.deleted_at IS NULL) <> (OLD.deleted_at IS NULL)
        UNION ALL
        SELECT 5, 'unread', CAST(OLD.unread_count AS TEXT), CAST(NEW.unread_count AS TEXT),
               NULL, NULL
        WHERE NEW.unread_count IS NOT OLD.unread_count
        UNION ALL
        SELECT 6, 'awaiting_reply',
               CASE OLD.awaiting_reply WHEN 1 THEN 'true' WHEN 0 THEN 'false' END,
               CASE NEW.awaiting_reply WHEN 1 THEN 'true' WHEN 0 THEN 'false' END, NULL, NULL
        WHERE NEW.awaiting_reply IS NOT OLD.awaiting_reply
    ) AS c
    ORDER BY c.ord;
END;

-- A conversation's events go with it (retention's deletion, `convsync sources forget`).
CREATE TRIGGER conversation_events_follow_their_row AFTER DELETE ON conversations
BEGIN
    DELETE FROM conversation_events
    WHERE source = OLD.source AND conversation_id = OLD.conversation_id;
END;

-- The released, never-changing view of the history (docs/schema.md "Report views").
CREATE VIEW v1_conversation_events AS
SELECT seq, source, conversation_id, kind, old_value, new_value, direction, provider_at,
       observed_at, run_id
FROM conversation_events;
