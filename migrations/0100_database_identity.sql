-- database_identity: a random name of this database, which namespaces every Redis key the service writes
-- (`<REDIS_PREFIX><nonce>:...`, docs/coupons.md "Redis losing data"). Redis state is a cache of this
-- database's decisions: a fresh database beside a Redis that still holds an earlier sale under the same
-- prefix must never read that sale's stock, holders or queue as its own.
CREATE TABLE database_identity (
    id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
    nonce VARCHAR(16) NOT NULL
);
