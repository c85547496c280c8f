-- Daily usage buckets of the statistics API. instance_id is '' for calls that name no
-- instance. Counters are added to (upsert), never overwritten.

CREATE TABLE usage_daily (
    day                TEXT NOT NULL,   -- YYYY-MM-DD (UTC)
    user_id            TEXT NOT NULL,
    instance_id        TEXT NOT NULL,
    messages_sent      INTEGER NOT NULL DEFAULT 0,
    messages_received  INTEGER NOT NULL DEFAULT 0,
    media_sent         INTEGER NOT NULL DEFAULT 0,
    media_received     INTEGER NOT NULL DEFAULT 0,
    total_media_size   INTEGER NOT NULL DEFAULT 0,
    api_calls          INTEGER NOT NULL DEFAULT 0,
    webhook_sent       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, user_id, instance_id)
);
CREATE INDEX usage_by_user ON usage_daily (user_id, day);
CREATE INDEX usage_by_instance ON usage_daily (instance_id, day);
