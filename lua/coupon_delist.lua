-- coupon_delist: remove coupons from `<prefix>coupons:unpersisted` whose listing ended, unless they were
-- listed again meanwhile.
--
-- KEYS:
--   KEYS[1] listed  sorted set `<prefix>coupons:unpersisted`: member = coupon id, score = the epoch it was
--                   listed with (written with ZADD GT, so a score only grows)
-- ARGV:
--   pairs of (coupon id, epoch): coupon_unlist.lua answered "not listed at epoch" for it, or found no state
--   (the caller then passes the score it read before asking)
-- Returns the number of coupons removed.
--
-- Compare-and-delete: a coupon listed again after coupon_unlist.lua ran has a score above the epoch passed
-- here (its listing ZADDed epoch + 1 before it could issue), and stays. Without the comparison, a removal
-- racing a new listing would leave a listed coupon out of the set, and its new issuances out of the list.
local removed = 0
for i = 1, #ARGV, 2 do
    local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
    if score ~= false and tonumber(score) <= tonumber(ARGV[i + 1]) then
        removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
    end
end
return removed
