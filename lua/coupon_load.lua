-- coupon_load: make a coupon issuable in Redis, at creation or when rebuilding its state from MySQL and from
-- what was left of it in Redis.
--
-- KEYS (one hash tag per coupon, `<prefix>coupon:{<id>}:...`, Redis Cluster safe):
--   KEYS[1] meta    hash {total, starts, ends, gen, epoch} (see coupon_issue.lua); written last, it
--                   marks the state loaded. `epoch` starts at the generation and `listed` is absent: the first
--                   issuance lists the coupon with an epoch above any a state before this rebuild used (a
--                   generation is at least the rebuild's time in µs, an epoch grows by one per listing)
--   KEYS[2] stock   string integer: issuances left
--   KEYS[3] issued  hash user id -> issued_at; the caller has already filled it with exactly the coupon's
--                   holders: MySQL's rows plus the winners only Redis still knew (a rebuild deletes meta,
--                   stock and issued first, then copies them in)
--   KEYS[4] queue   stream read by the writer's consumer group
-- ARGV:
--   ARGV[1] total quantity
--   ARGV[2] starts, microseconds since the Unix epoch
--   ARGV[3] ends, microseconds since the Unix epoch, or '' for no end
--   ARGV[4] consumer group name of the writer
--   ARGV[5] generation of this state (MySQL's `coupons.generation`, bumped by the rebuild that calls this)
--   ARGV[6] highest stream id the writer persisted (`<ms>-<seq>`, MySQL's `coupons.persisted_*`)
--   ARGV[7] the listing epoch the caller has just written to `<prefix>coupons:unpersisted` when it queues
--           holders again (below), or '0': then `epoch` is the generation and `listed` stays absent
--   ARGV[8..] pairs (issued_at µs, comma-separated user ids): holders in `issued` that MySQL does not have
--           yet, queued again with this generation so the writer persists them (their older entries, if any
--           are left, are then re-decided as already held); the coupon is listed while they wait
-- Returns 1 when it loaded the state, 0 when the state was already there (a concurrent creation; nothing is
-- changed). Rebuilds are serialized by a MySQL row lock on the coupon, so they never race each other here.
--
-- Algorithm: stock = total - HLEN(issued), never below 0. The stream and its group are created
-- if missing, from id 0, so entries queued before the group existed are still persisted (the writer
-- re-decides those of an older generation). The stream's last id is raised to the persisted one if it is
-- below (XSETID): a Redis that came back from an older file has a stream behind MySQL, which is how that is
-- detected, and new entries must sort after everything persisted so the check holds again once rebuilt.
-- The re-queued holders are added after that, so their entries sort after the persisted mark too.
if #KEYS ~= 4 or #ARGV < 7 or #ARGV % 2 ~= 1 then
    return redis.error_reply('coupon_load takes 4 keys and 7 arguments plus pairs')
end
if redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
end

local stock = tonumber(ARGV[1]) - redis.call('HLEN', KEYS[3])
if stock < 0 then
    stock = 0
end
redis.call('SET', KEYS[2], stock)

local created = redis.pcall('XGROUP', 'CREATE', KEYS[4], ARGV[4], '0', 'MKSTREAM')
if type(created) == 'table' and created.err ~= nil and string.find(created.err, 'BUSYGROUP', 1, true) == nil then
    return redis.error_reply(created.err)
end

local function parse_id(id)
    local ms, seq = string.match(id, '^(%d+)-(%d+)$')
    return tonumber(ms), tonumber(seq)
end
local persisted_ms, persisted_seq = parse_id(ARGV[6])
local info = redis.call('XINFO', 'STREAM', KEYS[4])
for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
        local last_ms, last_seq = parse_id(info[i + 1])
        if last_ms < persisted_ms or (last_ms == persisted_ms and last_seq < persisted_seq) then
            redis.call('XSETID', KEYS[4], ARGV[6])
        end
    end
end
for i = 8, #ARGV, 2 do
    redis.call('XADD', KEYS[4], '*', 'u', ARGV[i + 1], 't', ARGV[i], 'g', ARGV[5])
end

local fields = {'total', ARGV[1], 'starts', ARGV[2], 'gen', ARGV[5], 'epoch', ARGV[5]}
if ARGV[3] ~= '' then
    fields[#fields + 1] = 'ends'
    fields[#fields + 1] = ARGV[3]
end
if ARGV[7] ~= '0' then
    fields[8] = ARGV[7]
    fields[#fields + 1] = 'listed'
    fields[#fields + 1] = '1'
end
redis.call('HSET', KEYS[1], unpack(fields))
return 1
