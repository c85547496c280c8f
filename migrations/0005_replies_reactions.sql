-- Replies, mentions and reactions of messages.

-- The id of the message of the same chat a message replies to.
ALTER TABLE messages ADD COLUMN quoted_message_id TEXT;
-- JSON array of the addresses a message mentions.
ALTER TABLE messages ADD COLUMN mentions TEXT NOT NULL DEFAULT '[]';
-- JSON array of {sender, fromMe, emoji, timestamp}: one reaction per person.
ALTER TABLE messages ADD COLUMN reactions TEXT NOT NULL DEFAULT '[]';
