-- 1 while the relay still owes the row something (delivery to the data platform or the Redis sales count).
-- Delivered rows stay for audit; this lets the relay find the rest without scanning them.
ALTER TABLE outbox
    ADD COLUMN pending TINYINT AS (IF(delivered_at IS NULL OR sales_applied_at IS NULL, 1, 0)) STORED;
