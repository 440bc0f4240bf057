-- Replaces one shard of one day (sales set, applied-orders set, rebuild marker) by rebuilt copies, atomically.
--
-- KEYS[1]  the shard's day set        <prefix>sales:{rank:<s>}:YYYYMMDD          (member = product id, score = units)
-- KEYS[2]  the shard's applied set    <prefix>sales:{rank:<s>}:applied:YYYYMMDD  (order ids counted in KEYS[1])
-- KEYS[3]  the rebuilt sales set      (temporary; may be absent when the shard sold nothing that day)
-- KEYS[4]  the rebuilt applied set    (temporary; may be absent)
-- KEYS[5]  the shard's rebuild marker <prefix>sales:{rank:<s>}:rebuilt:YYYYMMDD
-- KEYS[6]  the shard's unfolded set   <prefix>sales:{rank:<s>}:unfolded:YYYYMMDD (units of KEYS[1] the window
--                                     sets do not hold yet, see lua/ranking_shard_top.lua)
-- KEYS[7]  the shard's window state   <prefix>sales:{rank:<s>}:windows
-- ARGV[1]  TTL of the day's keys, in seconds
-- ARGV[2]  the shard count (RANKING_SHARDS) the rebuild split the day by, stored in KEYS[5]
--
-- Returns an empty array when the shard's day was replaced, or, with nothing changed, the ids of orders that
-- the live applied set already counts but the rebuilt copy does not.
--
-- Algorithm: the outbox relay may count an order paid after the rebuild read MySQL; renaming over it would
-- lose that order. So the rename happens only when the rebuilt applied set covers the live one; otherwise
-- the caller adds the returned orders (from MySQL) to the copies and calls again. Each set is renamed over
-- the live one (same {rank:<s>} slot), or the live one only deleted when the rebuilt copy is empty. The marker is
-- written in the same call, so it is present exactly when the shard's day is complete from MySQL's view
-- (a Redis losing the sets loses it with them). The window sets hold the live day minus its unfolded set;
-- so that they stay exact without being made again, the difference the swap makes (rebuilt minus live, by
-- ZUNIONSTORE with WEIGHTS 1 1 -1, members left at 0 removed) is added to the unfolded set first, and the
-- next refresh folds it in like units the relay recorded. Without a window state there are no window sets
-- to keep exact (the next refresh makes them from the day sets), so no difference is computed. Each live
-- set is UNLINKed before the rename over it, so freeing it happens on Redis's background thread.
local missing = redis.call('SDIFF', KEYS[2], KEYS[4])
if #missing > 0 then
    return missing
end
local ttl = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[7]) == 1 then
    redis.call('ZUNIONSTORE', KEYS[6], 3, KEYS[6], KEYS[3], KEYS[1], 'WEIGHTS', 1, 1, -1)
    redis.call('ZREMRANGEBYSCORE', KEYS[6], 0, 0)
    redis.call('EXPIRE', KEYS[6], ttl)
end
for _, pair in ipairs({ { KEYS[3], KEYS[1] }, { KEYS[4], KEYS[2] } }) do
    redis.call('UNLINK', pair[2])
    if redis.call('EXISTS', pair[1]) == 1 then
        redis.call('RENAME', pair[1], pair[2])
        redis.call('EXPIRE', pair[2], ttl)
    end
end
redis.call('SET', KEYS[5], ARGV[2], 'EX', ttl)
return {}
