-- Webhooks (docs/webhooks-receiver.md), the same tables as migrations/postgres/0010.
--   webhook_deliveries   one row per accepted event: the dedupe key (source, event_id),
--              written in the transaction that applies the event, so that a provider's
--              retry of an event already applied is answered 200 and writes nothing.
--              Kept for `[webhooks] dedupe_retention` (longer than every provider's retry
--              horizon), then purged with the `[retention]` purge.
--     kind              the provider's event name (conversation.updated, InboundMessage, …)
--     conversation_id   the conversation it was about (NULL: about none)
--     sent_at / changed_at   the provider's times (NULL: it states none)
--     received_at       when the receiver committed it
--     outcome           applied | stale | not_mirrored | unrelated: what it did
--   conversations.state_changed_at   the activity time of the newest state an event
--              applied to the row (NULL: no event yet): a poll row whose last activity is
--              older is stale and leaves the row alone (the ordering rule). Rows an event
--              changed carry run_id 0 (no sync run).
CREATE TABLE webhook_deliveries (
    source          TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    conversation_id TEXT,
    sent_at         TEXT,
    changed_at      TEXT,
    received_at     TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    PRIMARY KEY (source, event_id)
);
CREATE INDEX webhook_deliveries_by_conversation
    ON webhook_deliveries (source, conversation_id);
CREATE INDEX webhook_deliveries_by_received ON webhook_deliveries (received_at);
ALTER TABLE conversations ADD COLUMN state_changed_at TEXT;
