-- Webhooks (docs/webhooks-receiver.md), the same tables as migrations/sqlite/0010: the
-- dedupe table of accepted events and the version of the state events applied to a row.
-- See the SQLite migration for the columns.
CREATE TABLE webhook_deliveries (
    source          text        NOT NULL,
    event_id        text        NOT NULL,
    kind            text        NOT NULL,
    conversation_id text,
    sent_at         timestamptz,
    changed_at      timestamptz,
    received_at     timestamptz NOT NULL,
    outcome         text        NOT NULL,
    PRIMARY KEY (source, event_id)
);
CREATE INDEX webhook_deliveries_by_conversation
    ON webhook_deliveries (source, conversation_id);
CREATE INDEX webhook_deliveries_by_received ON webhook_deliveries (received_at);
ALTER TABLE conversations ADD COLUMN state_changed_at timestamptz;
