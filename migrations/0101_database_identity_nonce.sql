-- A fresh database gets a random nonce. A database that already holds users or coupons (one upgraded from a
-- build before this migration) gets the empty nonce, so its keys keep their names and the issuances still
-- waiting in its Redis streams are persisted, not abandoned.
INSERT INTO database_identity (id, nonce)
SELECT 1, IF(EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM coupons), '', LEFT(SHA2(UUID(), 256), 12));
