-- coupon_load: make a coupon issuable in Redis, at creation or when rebuilding lost state from MySQL.
--
-- KEYS (one hash tag per coupon, `<prefix>coupon:{<id>}:...`, Redis Cluster safe):
--   KEYS[1] meta    hash {total, starts, ends} (see coupon_issue.lua); written last, it marks the state loaded
--   KEYS[2] stock   string integer: issuances left
--   KEYS[3] issued  hash user id -> issued_at; the caller has already added every issuance MySQL holds
--   KEYS[4] queue   stream read by the writer's consumer group
-- ARGV:
--   ARGV[1] total quantity
--   ARGV[2] starts, microseconds since the Unix epoch
--   ARGV[3] ends, microseconds since the Unix epoch, or '' for no end
--   ARGV[4] consumer group name of the writer
-- Returns 1 when it loaded the state, 0 when the state was already there (another request or instance won
-- the race; nothing is changed).
--
-- Algorithm: stock = total - HLEN(issued), never below 0. Counting the issued hash rather than trusting a
-- count read from MySQL earlier means that issuances another rebuild added meanwhile, or that survived in
-- Redis while only `meta` was lost, are never sold twice. The stream and its group are created if missing,
-- from id 0, so entries queued before the group existed are still persisted.
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

if ARGV[3] == '' then
    redis.call('HSET', KEYS[1], 'total', ARGV[1], 'starts', ARGV[2])
else
    redis.call('HSET', KEYS[1], 'total', ARGV[1], 'starts', ARGV[2], 'ends', ARGV[3])
end
return 1
