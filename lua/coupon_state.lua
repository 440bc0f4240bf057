-- coupon_state: what a coupon's Redis state says about its own history, to check it against MySQL before the
-- coupon issues again (a Redis that restarted, came back from an older file, or lost keys).
--
-- KEYS (the coupon's hash tag, see coupon_issue.lua):
--   KEYS[1] meta    hash {total, starts, ends, gen, epoch, listed}
--   KEYS[2] stock   string integer
--   KEYS[3] issued  hash user id -> issued_at
--   KEYS[4] queue   the coupon's issuance stream
-- ARGV: none.
-- Returns {loaded, generation, last_ms, last_seq, whole}:
--   loaded          1 when meta exists, else 0 (and the rest is 0)
--   generation      meta's `gen` (0 when absent: state loaded before generations existed)
--   last_ms-last_seq the stream's last generated id (0-0 when the stream is missing): every entry Redis ever
--                   queued for the coupon has an id at most this
--   whole           1 when the state passes the issue script's own check (`stock` is `total` minus the users
--                   `issued` holds, the stream exists), else 0: one of its keys was lost
-- One script rather than a pipeline so that the answer is one consistent instant of the state.
if #KEYS ~= 4 or #ARGV ~= 0 then
    return redis.error_reply('coupon_state takes 4 keys and no arguments')
end
if redis.call('EXISTS', KEYS[1]) == 0 then
    return {0, 0, 0, 0, 0}
end
local meta = redis.call('HMGET', KEYS[1], 'gen', 'total')
local gen = tonumber(meta[1] or '0')
local whole = 0
local stock = redis.call('GET', KEYS[2])
if meta[2] ~= false and stock ~= false
    and tonumber(stock) == math.max(tonumber(meta[2]) - redis.call('HLEN', KEYS[3]), 0)
    and redis.call('EXISTS', KEYS[4]) == 1 then
    whole = 1
end
if redis.call('EXISTS', KEYS[4]) == 0 then
    return {1, gen, 0, 0, whole}
end
local info = redis.call('XINFO', 'STREAM', KEYS[4])
for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
        local ms, seq = string.match(info[i + 1], '^(%d+)-(%d+)$')
        return {1, gen, tonumber(ms), tonumber(seq), whole}
    end
end
return redis.error_reply('XINFO STREAM without last-generated-id')
