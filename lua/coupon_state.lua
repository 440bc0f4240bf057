-- coupon_state: what a coupon's Redis state says about its own history, to check it against MySQL before the
-- coupon issues again (a Redis that restarted, came back from an older file, or lost keys).
--
-- KEYS (the coupon's hash tag, see coupon_issue.lua):
--   KEYS[1] meta    hash {total, starts, ends, gen}
--   KEYS[2] queue   the coupon's issuance stream
-- ARGV: none.
-- Returns {loaded, generation, last_ms, last_seq}:
--   loaded          1 when meta exists, else 0 (and the rest is 0)
--   generation      meta's `gen` (0 when absent: state loaded before generations existed)
--   last_ms-last_seq the stream's last generated id (0-0 when the stream is missing): every entry Redis ever
--                   queued for the coupon has an id at most this
-- One script rather than a pipeline so that the answer is one consistent instant of the state.
if redis.call('EXISTS', KEYS[1]) == 0 then
    return {0, 0, 0, 0}
end
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0')
if redis.call('EXISTS', KEYS[2]) == 0 then
    return {1, gen, 0, 0}
end
local info = redis.call('XINFO', 'STREAM', KEYS[2])
for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
        local ms, seq = string.match(info[i + 1], '^(%d+)-(%d+)$')
        return {1, gen, tonumber(ms), tonumber(seq)}
    end
end
return redis.error_reply('XINFO STREAM without last-generated-id')
