-- Edits and deletions of messages.

-- When the message's text was last edited (ms since the epoch).
ALTER TABLE messages ADD COLUMN edited_at INTEGER;
-- 1 once deleted for everyone: its text, caption and media are gone.
ALTER TABLE messages ADD COLUMN revoked INTEGER NOT NULL DEFAULT 0;
