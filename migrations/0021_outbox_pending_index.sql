-- The relay's work queue: owed rows, due first.
CREATE INDEX outbox_pending_due ON outbox (pending, next_attempt_at);
