-- coupon_issue: decide first-come-first-served issuances of one coupon, each atomically, in arrival order.
--
-- KEYS (all share the coupon's hash tag, `<prefix>coupon:{<id>}:...`, so the script runs unchanged on
-- Redis Cluster):
--   KEYS[1] meta    hash {total, starts, ends}: the campaign window in microseconds since the Unix epoch
--                   (`ends` absent: no end). Its absence means the coupon's state is not loaded.
--   KEYS[2] stock   string integer: issuances left.
--   KEYS[3] issued  hash user id -> issued_at (microseconds since the epoch): who holds the coupon.
--   KEYS[4] queue   stream of issuances for the MySQL writer (fields `u` = user id, `t` = issued_at).
-- ARGV:
--   ARGV[1]         now, microseconds since the Unix epoch (the caller's clock; it becomes issued_at)
--   ARGV[2..n+1]    the n user ids asking (decimal strings), in arrival order; a user may appear twice
-- Returns 2n integers, {code, issued_at} for each user in ARGV order:
--   0, now          issued: stock decremented, user recorded, issuance queued
--   1, issued_at    already issued to this user (issued_at of the first issuance)
--   2, 0            sold out
--   3, 0            outside the active window
--   4, 0            state not loaded (Redis lost it): the caller rebuilds it from MySQL and retries
--
-- Why several users per call: the caller coalesces the requests that arrive while earlier calls are in
-- flight, so a burst pays one round trip and one script invocation per batch instead of per request.
-- Nothing runs between two users of a batch that could not also have run between two single calls: the
-- script is atomic, and each user is decided exactly as a call of its own would decide it.
--
-- Why a stream per coupon: every key of one script call must live in one cluster slot, so the queue shares
-- the coupon's hash tag. The writer finds the streams through the registry set `<prefix>coupons` (written
-- when a coupon is created or rebuilt) and reads them with XREADGROUP one stream per command, pipelined,
-- because one XREADGROUP naming several streams only works when they share a slot.
--
-- Algorithm: for each user the checks run in the contract's order (duplicate, window, stock); only when all
-- pass is the user recorded with the issue time and the issuance XADDed. While the window is open and stock
-- is left, HSETNX makes the duplicate check and the record in one call (0: a duplicate, nothing written);
-- otherwise HGET tells a duplicate from a refusal. The stock is read once and written back once (DECRBY of
-- the count issued), which is equivalent because no other command interleaves.
-- Every reply is compared explicitly (`== 0`, `~= false`): in Lua 0 is true.
local replies = {}
local users = #ARGV - 1

if redis.call('EXISTS', KEYS[1]) == 0 then
    for i = 1, users do
        replies[2 * i - 1] = 4
        replies[2 * i] = 0
    end
    return replies
end

local now = tonumber(ARGV[1])
local window = redis.call('HMGET', KEYS[1], 'starts', 'ends')
local active = now >= tonumber(window[1]) and (window[2] == false or now < tonumber(window[2]))
local stock = tonumber(redis.call('GET', KEYS[2]) or '0')
local issued = 0

for i = 1, users do
    local user = ARGV[i + 1]
    local code, at = 0, now
    if active and stock - issued > 0 then
        -- Records the user unless they hold it already: the duplicate check and the write in one call.
        if redis.call('HSETNX', KEYS[3], user, ARGV[1]) == 1 then
            issued = issued + 1
            redis.call('XADD', KEYS[4], '*', 'u', user, 't', ARGV[1])
        else
            code, at = 1, tonumber(redis.call('HGET', KEYS[3], user))
        end
    else
        local previous = redis.call('HGET', KEYS[3], user)
        if previous ~= false then
            code, at = 1, tonumber(previous)
        elseif not active then
            code, at = 3, 0
        else
            code, at = 2, 0
        end
    end
    replies[2 * i - 1] = code
    replies[2 * i] = at
end

if issued > 0 then
    redis.call('DECRBY', KEYS[2], issued)
end
return replies
