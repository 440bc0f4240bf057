-- coupon_queue_ack: acknowledge persisted entries of a coupon's issuance stream and trim what no consumer
-- needs any more.
--
-- KEYS:
--   KEYS[1] queue   the coupon's stream (`<prefix>coupon:{<id>}:queue`, see coupon_issue.lua)
-- ARGV:
--   ARGV[1]         consumer group of the writer
--   ARGV[2..n+1]    the n entry ids just persisted
-- Returns the number of entries trimmed; 0 when the stream or its group is gone (Redis lost them after the
-- writer read the entries: there is nothing left to acknowledge, and failing would stall the writer).
--
-- Why trim instead of XDEL: deleting entries one by one cost Redis 2.5 µs per entry (a quarter of its
-- time in an issue run), while XTRIM MINID drops whole nodes from the head of the stream.
--
-- What is safe to trim: every entry before the group's smallest pending id (delivered, not yet
-- acknowledged, maybe by another instance), or, with nothing pending, every entry delivered so far (up to
-- the group's last-delivered-id). Entries are delivered in id order, so an entry before that point was
-- delivered and is no longer pending: it is persisted. Undelivered entries are newer and never trimmed.
-- The stream's length is then the entries not yet persisted, plus acknowledged ones that wait behind an
-- older pending entry.
if #ARGV < 2 then
    return 0
end
-- XPENDING summary: {count, smallest id, greatest id, consumers}; an error reply when the group is missing.
local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1])
if pending.err ~= nil then
    return 0
end
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
pending = redis.call('XPENDING', KEYS[1], ARGV[1])
if pending[1] > 0 then
    return redis.call('XTRIM', KEYS[1], 'MINID', pending[2])
end

-- XINFO GROUPS: one flat {field, value, ...} list per group.
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local fields = {}
    for i = 1, #group, 2 do
        fields[group[i]] = group[i + 1]
    end
    if fields['name'] == ARGV[1] then
        local ms, seq = string.match(fields['last-delivered-id'], '^(%d+)-(%d+)$')
        return redis.call('XTRIM', KEYS[1], 'MINID', ms .. '-' .. (tonumber(seq) + 1))
    end
end
return 0
