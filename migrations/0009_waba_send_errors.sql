-- Why Meta did not deliver a desk message: the error of a send that failed (after its
-- retries), or the `errors` of a `failed` status webhook. NULL for messages without one.

-- Meta's error code (131047, 130429, …); NULL when Meta could not be reached.
ALTER TABLE waba_messages ADD COLUMN error_code INTEGER;
-- Meta's title of the error, or what went wrong.
ALTER TABLE waba_messages ADD COLUMN error_title TEXT;
