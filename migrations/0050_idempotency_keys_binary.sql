-- Idempotency keys compare byte for byte (API.md: `abc`, `ABC` and `abc ` are three keys). The column
-- took the database's collation, case-insensitive and PAD SPACE, so those three were one key. Not
-- `utf8mb4_bin`: on MariaDB it is PAD SPACE too (`abc` = `abc `). VARBINARY compares bytes on MySQL and
-- MariaDB alike, and keys are printable ASCII, so nothing stored changes.
ALTER TABLE idempotency_keys MODIFY idem_key VARBINARY(128) NOT NULL;
