-- One shard's best sellers for every window of 1..D days ending today, unioned in Redis.
--
-- KEYS[1], KEYS[2]  <prefix>sales:{rank:<s>}:union:a, :union:b  scratch sorted sets; absent before and after
-- KEYS[3..D+2]      <prefix>sales:{rank:<s>}:YYYYMMDD            the shard's day sets, today first
--                                                                (member = product id, score = units)
-- KEYS[D+3..2D+2]   <prefix>sales:{rank:<s>}:rebuilt:YYYYMMDD    the days' rebuild markers, same order
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
-- units); window 1 is today's set itself. After each step the n-th score is read (ZREVRANGE n-1 n-1) and
-- every member scoring at least that is returned (ZREVRANGEBYSCORE +inf that). So one call reads each day
-- set once and yields all D windows. The unions alternate between the two scratch keys, and each window is
-- dropped by UNLINK once the next is built (and the last one before returning): freeing a union of
-- thousands of members then happens on Redis's background thread instead of inside this call, which is what
-- an overwriting ZUNIONSTORE or a DEL would do. Since a script runs atomically nobody else ever sees the
-- scratch keys, which is why fixed names per shard suffice. Every key carries the shard's hash tag: one
-- slot. A missing day set unions as empty.
local days = (#KEYS - 2) / 2
local n = tonumber(ARGV[1])
local marked = {}
local reply = { marked }
local window = KEYS[3]
for d = 1, days do
    if d > 1 then
        local into = KEYS[d % 2 + 1]
        redis.call('ZUNIONSTORE', into, 2, window, KEYS[2 + d])
        if d > 2 then
            redis.call('UNLINK', window)
        end
        window = into
    end
    local nth = redis.call('ZREVRANGE', window, n - 1, n - 1, 'WITHSCORES')
    if #nth == 0 then
        reply[d + 1] = redis.call('ZREVRANGE', window, 0, -1, 'WITHSCORES')
    else
        reply[d + 1] = redis.call('ZREVRANGEBYSCORE', window, '+inf', nth[2], 'WITHSCORES')
    end
    if redis.call('GET', KEYS[2 + days + d]) == ARGV[2] then
        marked[d] = 1
    else
        marked[d] = 0
    end
end
if days > 1 then
    redis.call('UNLINK', window)
end
return reply
