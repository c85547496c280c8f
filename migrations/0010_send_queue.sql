-- The send queue of a paced instance (`sendRate`) is its outbound messages still
-- `pending`, oldest first; this index finds them without scanning the history.
CREATE INDEX IF NOT EXISTS idx_messages_pending_sends
    ON messages (instance_id, from_me)
    WHERE status = 'pending';
