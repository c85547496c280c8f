-- Messages of both directions and the contacts of each instance.

CREATE TABLE messages (
    id                 TEXT PRIMARY KEY NOT NULL,
    instance_id        TEXT NOT NULL,
    -- WhatsApp's id of the message; unique within an instance.
    message_id         TEXT NOT NULL,
    remote_jid         TEXT NOT NULL,
    from_me            INTEGER NOT NULL,
    message_type       TEXT NOT NULL,
    content            TEXT,
    has_media          INTEGER NOT NULL DEFAULT 0,
    media_url          TEXT,
    caption            TEXT,
    mime_type          TEXT,
    file_name          TEXT,
    media_path         TEXT,
    media_size         INTEGER,
    status             TEXT NOT NULL,
    push_name          TEXT,
    metadata           TEXT NOT NULL,
    ts                 INTEGER NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    status_updated_at  INTEGER,
    -- Inbound messages the account has read (drives chats' unreadCount).
    read_by_me         INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX messages_by_wa_id ON messages (instance_id, message_id);
-- History of one chat, newest first, optionally within a date range.
CREATE INDEX messages_by_chat ON messages (instance_id, remote_jid, ts, id);

CREATE TABLE contacts (
    id               TEXT PRIMARY KEY NOT NULL,
    instance_id      TEXT NOT NULL,
    remote_jid       TEXT NOT NULL,
    number           TEXT NOT NULL,
    name             TEXT,
    push_name        TEXT,
    is_group         INTEGER NOT NULL DEFAULT 0,
    profile_picture  TEXT,
    about            TEXT,
    last_activity    INTEGER,
    -- Lower-cased name, push name and number: SQLite's LIKE folds only ASCII case, and
    -- contacts are searched in every script.
    search_text      TEXT NOT NULL DEFAULT '',
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE UNIQUE INDEX contacts_by_jid ON contacts (instance_id, remote_jid);
