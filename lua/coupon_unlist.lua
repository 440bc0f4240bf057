-- coupon_unlist: clear a coupon's listing once everything it issued is persisted and it has been quiet, so
-- the user-coupon list stops asking its `issued` hash (see coupon_issue.lua, "Why the listing").
--
-- KEYS (the coupon's hash tag, see coupon_issue.lua):
--   KEYS[1] meta    hash {..., epoch, listed}
--   KEYS[2] queue   the coupon's issuance stream
-- ARGV:
--   ARGV[1]         quiet period in milliseconds: a coupon whose stream got an entry more recently stays
--                   listed, so a coupon selling slowly is not unlisted and listed again (two more round trips
--                   for its next issuance) every time the writer empties its stream
-- Returns {state, epoch}:
--   0, 0            no state (never loaded, lost, or pruned): no issuance can be queued until a rebuild, which
--                   starts from an epoch above any used before (coupon_load.lua)
--   1, epoch        not listed at `epoch` (cleared now or before): the set may drop the coupon if its score is
--                   at most `epoch`
--   2, epoch        still listed: the stream holds entries not yet persisted, or got one within the quiet period
--
-- Why this is safe: an entry is queued only while `listed` is '1' (coupon_issue.lua), and an entry leaves the
-- stream only after the writer persisted it, so an empty stream means every issuance of this state is in
-- MySQL. Clearing `listed` here is atomic with that check; a later issuance must list the coupon again with a
-- higher epoch before it is decided. Redis's own clock (TIME) is compared with the stream's last id, which
-- Redis also stamps, so instances' clocks do not matter.
local fields = redis.call('HMGET', KEYS[1], 'gen', 'epoch', 'listed')
if fields[1] == false then
    return {0, 0}
end
local epoch = tonumber(fields[2] or fields[1])
if fields[3] ~= '1' then
    return {1, epoch}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
    if redis.call('XLEN', KEYS[2]) > 0 then
        return {2, epoch}
    end
    local now = redis.call('TIME')
    local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    local info = redis.call('XINFO', 'STREAM', KEYS[2])
    for i = 1, #info, 2 do
        if info[i] == 'last-generated-id' then
            local last_ms = tonumber(string.match(info[i + 1], '^(%d+)-'))
            if last_ms > now_ms - tonumber(ARGV[1]) then
                return {2, epoch}
            end
        end
    end
end
redis.call('HSET', KEYS[1], 'listed', '0')
return {1, epoch}
