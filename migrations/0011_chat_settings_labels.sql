-- How the account keeps its chats (WhatsApp syncs these between its devices), and its
-- WhatsApp Business labels. A chat has a row once something of it was set.
CREATE TABLE chat_settings (
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    remote_jid TEXT NOT NULL,
    archived INTEGER NOT NULL DEFAULT 0,
    pinned INTEGER NOT NULL DEFAULT 0,
    -- WhatsApp's encoding: NULL not muted, -1 until unmuted, else the end in Unix ms.
    muted_until INTEGER,
    -- The label ids on the chat: a JSON array of strings, sorted.
    labels TEXT NOT NULL DEFAULT '[]',
    updated_at INTEGER NOT NULL,
    UNIQUE (instance_id, remote_jid)
);

CREATE TABLE labels (
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    -- WhatsApp's id of the label.
    label_id TEXT NOT NULL,
    name TEXT NOT NULL,
    -- WhatsApp's colour index.
    color INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (instance_id, label_id)
);
