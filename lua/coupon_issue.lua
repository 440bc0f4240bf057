-- coupon_issue: decide one first-come-first-served issuance of a coupon, atomically.
--
-- KEYS (all share the coupon's hash tag, `<prefix>coupon:{<id>}:...`, so the script runs unchanged on
-- Redis Cluster):
--   KEYS[1] meta    hash {total, starts, ends}: the campaign window in microseconds since the Unix epoch
--                   (`ends` absent: no end). Its absence means the coupon's state is not loaded.
--   KEYS[2] stock   string integer: issuances left.
--   KEYS[3] issued  hash user id -> issued_at (microseconds since the epoch): who holds the coupon.
--   KEYS[4] queue   stream of issuances for the MySQL writer (fields `u` = user id, `t` = issued_at).
-- ARGV:
--   ARGV[1] user id (decimal string)
--   ARGV[2] now, microseconds since the Unix epoch (the caller's clock; it becomes issued_at)
-- Returns {code, issued_at}:
--   {0, now}        issued: stock decremented, user recorded, issuance queued
--   {1, issued_at}  already issued to this user (issued_at of the first issuance)
--   {2, 0}          sold out
--   {3, 0}          outside the active window
--   {4, 0}          state not loaded (Redis lost it): the caller rebuilds it from MySQL and retries
--
-- Why a stream per coupon: every key of one script call must live in one cluster slot, so the queue shares
-- the coupon's hash tag. The writer finds the streams through the registry set `<prefix>coupons` (written
-- when a coupon is created or rebuilt) and reads them with XREADGROUP one stream per command, pipelined,
-- because one XREADGROUP naming several streams only works when they share a slot.
--
-- Algorithm: the checks run in the contract's order (duplicate, window, stock); only when all pass are the
-- three writes made, and since a script runs atomically no other issuance interleaves, so stock never goes
-- below zero and a user is recorded at most once. Every reply is compared explicitly (`== 0`, `== false`):
-- in Lua 0 is true.
if redis.call('EXISTS', KEYS[1]) == 0 then
    return {4, 0}
end

local previous = redis.call('HGET', KEYS[3], ARGV[1])
if previous ~= false then
    return {1, tonumber(previous)}
end

local now = tonumber(ARGV[2])
local window = redis.call('HMGET', KEYS[1], 'starts', 'ends')
if now < tonumber(window[1]) or (window[2] ~= false and now >= tonumber(window[2])) then
    return {3, 0}
end

local stock = tonumber(redis.call('GET', KEYS[2]) or '0')
if stock <= 0 then
    return {2, 0}
end

redis.call('DECR', KEYS[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[4], '*', 'u', ARGV[1], 't', ARGV[2])
return {0, now}
