-- Locations, contact cards and polls.

-- JSON {location?, contacts?, poll?}: what a message carries besides text and media.
ALTER TABLE messages ADD COLUMN typed TEXT NOT NULL DEFAULT '{}';
-- WhatsApp's per-message secret (a poll's key to its votes).
ALTER TABLE messages ADD COLUMN message_secret BLOB;
