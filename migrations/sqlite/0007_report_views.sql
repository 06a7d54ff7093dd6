-- Schema version 7: the versioned reporting interface (docs/schema.md, "Report views").
--
-- Reports read `v1_` views, not the physical tables: a table may change in a later
-- migration, a `v1_` view may not (its columns, their order, types and meaning stay; a
-- change adds a `v2_` view beside it). tests/it/reports/ pins every `v1_` view's columns on
-- both backends; migrations/postgres/0007_report_views.sql defines the same views.
--
--   channel_kinds      the provider's own channel word → a small shared vocabulary, the one
--                      place the mapping lives (docs/providers/*.md show these rows; a later
--                      mapping is a later migration's INSERT). Matched ignoring case.
--   v1_conversations   one row per conversation with normalised columns: channel_kind,
--                      opened_at (+ opened_at_source), is_open, waiting_since / _seconds
--   v1_awaiting_reply  the open conversations whose contact waits for an answer, longest first
--   v1_daily_volume    per UTC day, provider and channel_kind: opened, closed, deleted

CREATE TABLE channel_kinds (
    provider TEXT NOT NULL,  -- d365 | spruce | sinch | highlevel
    channel  TEXT NOT NULL,  -- the provider's word, as its documentation spells it
    kind     TEXT NOT NULL,  -- the shared vocabulary (docs/schema.md, "channel_kind")
    PRIMARY KEY (provider, channel)
);

INSERT INTO channel_kinds (provider, channel, kind) VALUES
    ('d365',      'custom',          'custom'),
    ('spruce',    'phone',           'phone'),
    ('spruce',    'email',           'email'),
    ('spruce',    'secure',          'secure'),
    ('spruce',    'fax',             'fax'),
    ('spruce',    'team',            'internal'),
    ('spruce',    'note',            'internal'),
    ('spruce',    'other',           'other'),
    ('sinch',     'SMS',             'sms'),
    ('sinch',     'MMS',             'mms'),
    ('sinch',     'RCS',             'rcs'),
    ('sinch',     'WHATSAPP',        'whatsapp'),
    ('sinch',     'MESSENGER',       'facebook'),
    ('sinch',     'INSTAGRAM',       'instagram'),
    ('sinch',     'TELEGRAM',        'telegram'),
    ('sinch',     'VIBER',           'viber'),
    ('sinch',     'VIBERBM',         'viber'),
    ('sinch',     'LINE',            'line'),
    ('sinch',     'WECHAT',          'wechat'),
    ('sinch',     'KAKAOTALK',       'kakaotalk'),
    ('sinch',     'KAKAOTALKCHAT',   'kakaotalk'),
    ('sinch',     'APPLEBC',         'apple_messages'),
    ('highlevel', 'TYPE_PHONE',      'phone'),
    ('highlevel', 'TYPE_EMAIL',      'email'),
    ('highlevel', 'TYPE_FB_MESSENGER', 'facebook'),
    ('highlevel', 'TYPE_REVIEW',     'review'),
    ('highlevel', 'TYPE_GROUP_SMS',  'sms'),
    ('highlevel', 'TYPE_SMS',        'sms'),
    ('highlevel', 'TYPE_CALL',       'phone'),
    ('highlevel', 'TYPE_RCS',        'rcs'),
    ('highlevel', 'TYPE_WHATSAPP',   'whatsapp'),
    ('highlevel', 'TYPE_FACEBOOK',   'facebook'),
    ('highlevel', 'TYPE_INSTAGRAM',  'instagram'),
    ('highlevel', 'TYPE_LIVE_CHAT',  'webchat'),
    ('highlevel', 'TYPE_WEBCHAT',    'webchat'),
    ('highlevel', 'TYPE_GMB',        'google_business'),
    ('highlevel', 'TYPE_TIKTOK',     'tiktok');

-- A D365 source is one custom messaging channel, so every D365 conversation's channel is
-- `custom` (the parser writes it since this version); rows mirrored before it get it here.
UPDATE conversations SET channel = 'custom' WHERE provider = 'd365' AND channel IS NULL;

CREATE VIEW v1_conversations AS
SELECT
    c.source,
    c.conversation_id,
    c.provider,
    c.account,
    c.channel,
    CASE WHEN c.channel IS NOT NULL THEN
        COALESCE((SELECT min(k.kind) FROM channel_kinds k
                  WHERE k.provider = c.provider AND lower(k.channel) = lower(c.channel)),
                 'other')
    END AS channel_kind,
    c.status,
    c.active,
    CASE WHEN c.active = 0 OR c.closed_at IS NOT NULL OR c.deleted_at IS NOT NULL THEN 0
         WHEN c.active = 1 THEN 1
    END AS is_open,
    COALESCE(c.created_at, c.first_seen_at) AS opened_at,
    CASE WHEN c.created_at IS NOT NULL THEN 'created' ELSE 'first_seen' END AS opened_at_source,
    c.created_at,
    c.first_seen_at,
    c.last_activity_at,
    c.closed_at,
    c.deleted_at,
    c.contact_id,
    c.contact_name,
    c.contact_phone,
    c.contact_email,
    c.title,
    c.assignee,
    c.unread_count,
    c.last_message_direction,
    c.last_inbound_at,
    c.last_outbound_at,
    c.awaiting_reply,
    CASE WHEN c.awaiting_reply = 1 AND c.active = 1
              AND c.closed_at IS NULL AND c.deleted_at IS NULL
         THEN c.last_inbound_at
    END AS waiting_since,
    CASE WHEN c.awaiting_reply = 1 AND c.active = 1
              AND c.closed_at IS NULL AND c.deleted_at IS NULL
              AND c.last_inbound_at IS NOT NULL
         THEN max(0, CAST((julianday('now') - julianday(c.last_inbound_at)) * 86400 AS INTEGER))
    END AS waiting_seconds,
    c.last_changed_at
FROM conversations c;

CREATE VIEW v1_awaiting_reply AS
SELECT
    source,
    conversation_id,
    provider,
    account,
    channel,
    channel_kind,
    contact_id,
    contact_name,
    contact_phone,
    contact_email,
    title,
    assignee,
    unread_count,
    waiting_since,
    waiting_seconds
FROM v1_conversations
WHERE waiting_since IS NOT NULL
ORDER BY waiting_since, source, conversation_id;

CREATE VIEW v1_daily_volume AS
SELECT
    day,
    provider,
    channel_kind,
    sum(opened) AS opened,
    sum(opened_first_seen) AS opened_first_seen,
    sum(closed) AS closed,
    sum(deleted) AS deleted
FROM (
    SELECT substr(opened_at, 1, 10) AS day, provider, channel_kind, 1 AS opened,
           CASE WHEN opened_at_source = 'first_seen' THEN 1 ELSE 0 END AS opened_first_seen,
           0 AS closed, 0 AS deleted
    FROM v1_conversations
    UNION ALL
    SELECT substr(closed_at, 1, 10), provider, channel_kind, 0, 0, 1, 0
    FROM v1_conversations WHERE closed_at IS NOT NULL
    UNION ALL
    SELECT substr(deleted_at, 1, 10), provider, channel_kind, 0, 0, 0, 1
    FROM v1_conversations WHERE deleted_at IS NOT NULL
) AS events
GROUP BY day, provider, channel_kind;
