-- One shard's best sellers for every window of 1..D days ending today, unioned in Redis.
--
-- KEYS[1]           <prefix>sales:{rank:<s>}:union               scratch sorted set; absent before and after
-- KEYS[2..D+1]      <prefix>sales:{rank:<s>}:YYYYMMDD            the shard's day sets, today first
--                                                                (member = product id, score = units)
-- KEYS[D+2..2D+1]   <prefix>sales:{rank:<s>}:rebuilt:YYYYMMDD    the days' rebuild markers, same order
-- ARGV[1]  n: entries wanted per window (the largest `limit` served), >= 1
-- ARGV[2]  the shard count the markers must hold to count as present (RANKING_SHARDS)
--
-- Returns { marked, window_1, ..., window_D }: `marked` is D integers, 1 when the day's marker holds
-- ARGV[2], else 0; `window_d` is a flat array member, score, member, score, ... of the window of d days,
-- highest score first: the n best members, plus every further member tied with the n-th (so the caller can
-- break ties by product id, which Redis cannot: equal scores go by member string), or all members when the
-- window has fewer than n.
--
-- Algorithm: the window grows a day at a time, window d+1 = ZUNIONSTORE of window d and day d+1 (SUM of
-- units), into KEYS[1]; after each step the n-th score is read (ZREVRANGE n-1 n-1) and every member scoring
-- at least that is returned (ZREVRANGEBYSCORE +inf that). So one call reads each day set once and yields all
-- D windows. KEYS[1] is deleted before returning; since a script runs atomically nobody else ever sees it,
-- which is why one fixed scratch key per shard suffices. Every key carries the shard's hash tag: one slot.
-- A missing day set unions as empty; an empty union deletes KEYS[1], which the next step treats as empty.
local days = (#KEYS - 1) / 2
local n = tonumber(ARGV[1])
local union = KEYS[1]
local marked = {}
local reply = { marked }
for d = 1, days do
    if d == 1 then
        redis.call('ZUNIONSTORE', union, 1, KEYS[2])
    else
        redis.call('ZUNIONSTORE', union, 2, union, KEYS[1 + d])
    end
    local nth = redis.call('ZREVRANGE', union, n - 1, n - 1, 'WITHSCORES')
    if #nth == 0 then
        reply[d + 1] = redis.call('ZREVRANGE', union, 0, -1, 'WITHSCORES')
    else
        reply[d + 1] = redis.call('ZREVRANGEBYSCORE', union, '+inf', nth[2], 'WITHSCORES')
    end
    if redis.call('GET', KEYS[1 + days + d]) == ARGV[2] then
        marked[d] = 1
    else
        marked[d] = 0
    end
end
redis.call('DEL', union)
return reply
