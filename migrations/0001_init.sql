-- Users, instances, their activity log and their events.
-- Timestamps are unix milliseconds (INTEGER): compact, sortable, and range-filterable
-- with an index. Ids are time-ordered UUID v7 strings, so "ORDER BY id" is creation order.

CREATE TABLE users (
    id              TEXT PRIMARY KEY NOT NULL,
    email           TEXT NOT NULL COLLATE NOCASE UNIQUE,
    password_hash   TEXT NOT NULL,
    first_name      TEXT NOT NULL,
    last_name       TEXT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('admin', 'user', 'operator')),
    owner_id        TEXT,
    active          INTEGER NOT NULL DEFAULT 1,
    -- SHA-256 of the API key (lookup); the key itself only sealed under the server key.
    api_key_hash    TEXT NOT NULL UNIQUE,
    api_key_sealed  TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

CREATE TABLE instances (
    id                TEXT PRIMARY KEY NOT NULL,
    user_id           TEXT NOT NULL,
    name              TEXT NOT NULL,
    description       TEXT,
    engine            TEXT NOT NULL,
    status            TEXT NOT NULL,
    phone             TEXT,
    webhook_url       TEXT,
    webhook_enabled   INTEGER NOT NULL DEFAULT 0,
    -- WebhookSettings as JSON: read and written whole, never queried by field.
    webhook_settings  TEXT NOT NULL,
    limits            TEXT,
    last_activity     INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX instances_by_user ON instances (user_id, id);

CREATE TABLE activity (
    id           TEXT PRIMARY KEY NOT NULL,
    instance_id  TEXT NOT NULL,
    action       TEXT NOT NULL,
    details      TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX activity_by_instance ON activity (instance_id, created_at);

CREATE TABLE events (
    id           TEXT PRIMARY KEY NOT NULL,
    instance_id  TEXT NOT NULL,
    kind         TEXT NOT NULL,
    ts           INTEGER NOT NULL,
    data         TEXT NOT NULL
);
CREATE INDEX events_by_instance ON events (instance_id, id);
CREATE INDEX events_by_instance_ts ON events (instance_id, ts);
