-- Adds one paid order's units in one shard to that shard's day set, exactly once per order and shard.
--
-- KEYS[1]  <prefix>sales:{rank:<s>}:YYYYMMDD          sorted set, member = product id, score = units sold
-- KEYS[2]  <prefix>sales:{rank:<s>}:applied:YYYYMMDD  set of order ids already counted in KEYS[1]
-- KEYS[3]  <prefix>sales:{rank:<s>}:unfolded:YYYYMMDD sorted set: units of KEYS[1] the shard's window sets
--                                                     do not hold yet (lua/ranking_shard_top.lua folds them)
-- ARGV[1]  order id
-- ARGV[2]  TTL of the three keys, in seconds (the day sets are kept 8 days; 9 leaves a margin)
-- ARGV[3..] pairs: product id, units (only products of shard <s>; the caller calls once per shard)
--
-- Returns 1 when the order was counted now, 0 when it had been counted before (a replay).
--
-- Algorithm: SADD the order id to the applied set; only if it was new (== 1, since 0 is true in Lua),
-- ZINCRBY each product's units into the day set and the unfolded set alike. All keys then get the TTL. The
-- three sets change in one script, so a crash can never leave an order counted without being marked, or
-- counted in the day without being owed to the window sets, or the reverse.
local added = redis.call('SADD', KEYS[2], ARGV[1])
if added == 1 then
    for i = 3, #ARGV, 2 do
        redis.call('ZINCRBY', KEYS[1], ARGV[i + 1], ARGV[i])
        redis.call('ZINCRBY', KEYS[3], ARGV[i + 1], ARGV[i])
    end
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[2])
return added
