-- The operator desk's files: an inbound attachment is fetched from Meta by its media id
-- after the message is stored, and where that stands is kept on the message; an uploaded
-- file sent by id is kept the same way. All NULL for messages without a file.

-- Meta's media id.
ALTER TABLE waba_messages ADD COLUMN media_id TEXT;
ALTER TABLE waba_messages ADD COLUMN media_mime_type TEXT;
ALTER TABLE waba_messages ADD COLUMN media_file_name TEXT;
ALTER TABLE waba_messages ADD COLUMN media_size INTEGER;
-- The file, relative to DATA_DIR/uploads/, once stored.
ALTER TABLE waba_messages ADD COLUMN media_path TEXT;
-- `pending`, `stored` or `failed`.
ALTER TABLE waba_messages ADD COLUMN media_state TEXT;
ALTER TABLE waba_messages ADD COLUMN media_attempts INTEGER;
-- Why the last fetch attempt failed.
ALTER TABLE waba_messages ADD COLUMN media_error TEXT;
