-- The WABA operator desk: one Cloud API account per owner, chats with customers and
-- their messages. Chat and message ids are numbers (the spec's `chatId: number`).

CREATE TABLE waba_accounts (
    owner_id             TEXT PRIMARY KEY NOT NULL,
    -- Meta's id of the business phone number: routes Meta's webhooks to the account.
    phone_number_id      TEXT NOT NULL UNIQUE,
    business_account_id  TEXT NOT NULL,
    -- Sealed under the server's secret key; never stored in the clear.
    access_token         TEXT NOT NULL,
    app_secret           TEXT NOT NULL,
    verify_token         TEXT NOT NULL,
    -- SHA-256 (hex) of the verify token: how Meta's verification request finds the account.
    verify_token_hash    TEXT NOT NULL,
    updated_at           INTEGER NOT NULL
);
CREATE INDEX waba_accounts_by_verify_token ON waba_accounts (verify_token_hash);

CREATE TABLE waba_chats (
    id                        INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id                  TEXT NOT NULL,
    customer_phone            TEXT NOT NULL,
    customer_name             TEXT,
    -- Meta's timestamp of the newest inbound message: the start of the 24-hour window.
    last_customer_message_at  INTEGER,
    last_message_at           INTEGER,
    assigned_operator_id      TEXT,
    created_at                INTEGER NOT NULL
);
CREATE UNIQUE INDEX waba_chats_by_customer ON waba_chats (owner_id, customer_phone);
-- Chat lists, newest activity first.
CREATE INDEX waba_chats_by_activity ON waba_chats (owner_id, last_message_at, id);

CREATE TABLE waba_messages (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id              INTEGER NOT NULL REFERENCES waba_chats (id) ON DELETE CASCADE,
    owner_id             TEXT NOT NULL,
    -- Meta's `wamid.…`: webhook retries and status updates find messages by it.
    whatsapp_message_id  TEXT NOT NULL UNIQUE,
    from_me              INTEGER NOT NULL,
    message_type         TEXT NOT NULL,
    content              TEXT,
    media_url            TEXT,
    status               TEXT NOT NULL,
    is_read_by_operator  INTEGER NOT NULL DEFAULT 0,
    sender_user_id       TEXT,
    ts                   INTEGER NOT NULL,
    status_updated_at    INTEGER
);
CREATE INDEX waba_messages_by_chat ON waba_messages (chat_id, ts, id);
