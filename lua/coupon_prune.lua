-- coupon_prune: delete the Redis state of a campaign that ended and whose every issuance is persisted, for
-- the retention job (docs/coupons.md, "Pruning ended campaigns").
--
-- KEYS (the coupon's hash tag, see coupon_issue.lua):
--   KEYS[1] meta    hash; deleted first, so the issue script answers "not loaded" at once
--   KEYS[2] stock   string
--   KEYS[3] issued  hash user id -> issued_at: one field per holder, up to the campaign's quantity
--   KEYS[4] queue   the issuance stream
-- ARGV: none.
-- Returns 1 when it deleted the state, 0 when the stream still holds entries (not everything is persisted, or
-- an instance holds entries it has not acknowledged): nothing is deleted then.
--
-- Called under the MySQL lock of the coupon row (the lock the writer and rebuilds take), in the transaction
-- that marks the coupon pruned, so no rebuild reloads the state while it goes. The check and the delete are
-- one atomic step, so no entry can be queued in between. UNLINK, not DEL: an `issued` hash of millions of
-- fields is freed by a background thread, and Redis is not blocked while it goes.
if redis.call('XLEN', KEYS[4]) > 0 then
    return 0
end
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 1
