-- The retention job deletes idempotency keys past their age in batches by `created_at`: without this index
-- each batch would scan the whole table.
CREATE INDEX idempotency_keys_by_time ON idempotency_keys (created_at);
