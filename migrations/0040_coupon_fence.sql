-- The fence between a rebuild of a coupon's Redis state and the writer (docs/coupons.md, "Redis losing data").
-- generation: set by every rebuild to a new value (max(old + 1, now in µs)); Redis stamps each stream entry
--   with the generation of the state that decided it, and the writer inserts only entries of the current one.
-- persisted_ms, persisted_seq: the highest stream entry id the writer persisted, written in the same
--   transaction as the rows; a stream whose last id is below it means Redis went back in time.
ALTER TABLE coupons
    ADD COLUMN generation    BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN persisted_ms  BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN persisted_seq BIGINT NOT NULL DEFAULT 0;
