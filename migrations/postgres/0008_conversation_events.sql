-- Change history (docs/schema.md "Change history"), the same tables as
-- migrations/sqlite/0008: one row per observed change of a tracked fact of a conversation,
-- written by the triggers below in the transaction that changed the row, whichever path
-- changed it (a listing page or COPY, a follow-up's answer, a sweep's absences). No
-- contact data: ids, states, times and the assignee only.
--
-- seq comes from conversation_events_seq, allocated before commit: with several writers
-- (sources, replicas) a reader could see seq 11 committed while 10 is still open. The
-- change feed therefore reads only below a safe horizon (src/store/postgres/events.rs):
-- the sequence's last value L, once every transaction that was open when L was read has
-- ended. A value can only be allocated by a transaction that already holds an xid (the
-- triggers run after the row is written), so that wait is enough. CACHE 1 (the default)
-- is part of the rule: a cached block would hand out values below L later.
CREATE SEQUENCE conversation_events_seq CACHE 1;

CREATE TABLE conversation_events (
    seq             bigint      PRIMARY KEY DEFAULT nextval('conversation_events_seq'),
    source          text        NOT NULL,
    conversation_id text        NOT NULL,
    kind            text        NOT NULL,
    old_value       text,
    new_value       text,
    direction       text,
    provider_at     timestamptz,
    observed_at     timestamptz NOT NULL,
    run_id          bigint
);
ALTER SEQUENCE conversation_events_seq OWNED BY conversation_events.seq;
CREATE INDEX conversation_events_by_conversation
    ON conversation_events (source, conversation_id);

CREATE TABLE event_settings (
    id       bigint PRIMARY KEY CHECK (id = 1),
    backfill text   NOT NULL CHECK (backfill IN ('first_seen', 'none'))
);
INSERT INTO event_settings (id, backfill) VALUES (1, 'first_seen');

CREATE TABLE backfilled_sources (
    source       text        PRIMARY KEY,
    caught_up_at timestamptz NOT NULL
);
INSERT INTO backfilled_sources (source, caught_up_at)
    SELECT source, MIN(COALESCE(finished_at, started_at)) FROM sync_runs
    WHERE outcome = 'caught_up' GROUP BY source;

-- An instant as event text: the mirror's SQLite format, so both backends' values compare.
CREATE FUNCTION convsync_event_time(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS
$$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') $$;

CREATE FUNCTION convsync_backfill_over() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO backfilled_sources (source, caught_up_at)
        VALUES (NEW.source, COALESCE(NEW.finished_at, NEW.started_at))
        ON CONFLICT (source) DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER backfill_over AFTER UPDATE OF outcome ON sync_runs
    FOR EACH ROW WHEN (NEW.outcome = 'caught_up') EXECUTE FUNCTION convsync_backfill_over();

-- Once per statement (a COPY of thousands of rows costs one INSERT … SELECT).
CREATE FUNCTION convsync_first_seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO conversation_events
        (source, conversation_id, kind, new_value, provider_at, observed_at, run_id)
    SELECT n.source, n.conversation_id, 'first_seen', n.awaiting_reply::text, n.created_at,
           n.first_seen_at, n.run_id
    FROM inserted n
    WHERE (SELECT backfill FROM event_settings) = 'first_seen'
       OR EXISTS (SELECT 1 FROM backfilled_sources b WHERE b.source = n.source);
    RETURN NULL;
END $$;
CREATE TRIGGER conversation_first_seen AFTER INSERT ON conversations
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION convsync_first_seen();

CREATE FUNCTION convsync_conversation_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO conversation_events
        (source, conversation_id, kind, old_value, new_value, direction, provider_at,
         observed_at, run_id)
    SELECT NEW.source, NEW.conversation_id, c.kind, c.old_value, c.new_value, c.direction,
           c.provider_at, NEW.last_changed_at, NEW.run_id
    FROM (
        SELECT 1 AS ord, 'activity' AS kind,
               convsync_event_time(OLD.last_activity_at) AS old_value,
               convsync_event_time(NEW.last_activity_at) AS new_value,
               CASE NEW.last_activity_at WHEN NEW.last_inbound_at THEN 'inbound'
                                         WHEN NEW.last_outbound_at THEN 'outbound' END
                   AS direction,
               NEW.last_activity_at AS provider_at
        WHERE NEW.last_activity_at IS DISTINCT FROM OLD.last_activity_at
        UNION ALL
        SELECT 2, 'assigned', OLD.assignee, NEW.assignee, NULL, NULL
        WHERE NEW.assignee IS DISTINCT FROM OLD.assignee
        UNION ALL
        SELECT 3, CASE WHEN NOT NEW.active THEN 'closed'
                       WHEN OLD.active = false THEN 'reopened' ELSE 'opened' END,
               OLD.active::text, NEW.active::text, NULL, NULL
        WHERE NEW.active IS DISTINCT FROM OLD.active AND NEW.active IS NOT NULL
        UNION ALL
        SELECT 4, CASE WHEN NEW.deleted_at IS NULL THEN 'restored' ELSE 'deleted' END,
               convsync_event_time(OLD.deleted_at), convsync_event_time(NEW.deleted_at),
               NULL, NULL
        WHERE (NEW.deleted_at IS NULL) <> (OLD.deleted_at IS NULL)
        UNION ALL
        SELECT 5, 'unread', OLD.unread_count::text, NEW.unread_count::text, NULL, NULL
        WHERE NEW.unread_count IS DISTINCT FROM OLD.unread_count
        UNION ALL
        SELECT 6, 'awaiting_reply', OLD.awaiting_reply::text, NEW.awaiting_reply::text,
               NULL, NULL
        WHERE NEW.awaiting_reply IS DISTINCT FROM OLD.awaiting_reply
    ) AS c
    -- Not during the source's backfill: its follow-ups fill in the first known state.
    WHERE EXISTS (SELECT 1 FROM backfilled_sources b WHERE b.source = NEW.source)
    ORDER BY c.ord;
    RETURN NULL;
END $$;
-- Only statements that set a tracked column (a sweep's touch or retention's redaction set
-- none), and only rows where one of them changed.
CREATE TRIGGER conversation_changed
    AFTER UPDATE OF last_activity_at, assignee, active, deleted_at, unread_count,
                    awaiting_reply ON conversations
    FOR EACH ROW
    WHEN (NEW.last_activity_at IS DISTINCT FROM OLD.last_activity_at
       OR NEW.assignee IS DISTINCT FROM OLD.assignee
       OR NEW.active IS DISTINCT FROM OLD.active
       OR NEW.deleted_at IS DISTINCT FROM OLD.deleted_at
       OR NEW.unread_count IS DISTINCT FROM OLD.unread_count
       OR NEW.awaiting_reply IS DISTINCT FROM OLD.awaiting_reply)
    EXECUTE FUNCTION convsync_conversation_changed();

-- A conversation's events go with it (retention's deletion, `convsync sources forget`).
CREATE FUNCTION convsync_events_follow_their_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM conversation_events e USING removed r
    WHERE e.source = r.source AND e.conversation_id = r.conversation_id;
    RETURN NULL;
END $$;
CREATE TRIGGER conversation_events_follow_their_row AFTER DELETE ON conversations
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION convsync_events_follow_their_row();

-- The released, never-changing view of the history (docs/schema.md "Report views").
CREATE VIEW v1_conversation_events AS
SELECT seq, source, conversation_id, kind, old_value, new_value, direction, provider_at,
       observed_at, run_id
FROM conversation_events;
