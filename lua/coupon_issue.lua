-- coupon_issue: decide first-come-first-served issuances of one coupon, each atomically, in arrival order.
--
-- KEYS (all share the coupon's hash tag, `<prefix>coupon:{<id>}:...`, so the script runs unchanged on
-- Redis Cluster):
--   KEYS[1] meta    hash {total, starts, ends, gen, epoch, listed}: the campaign's quantity and window in
--                   microseconds since the Unix epoch (`ends` absent: no end), the generation of this state (see
--                   coupon_load.lua), and the listing (below): `listed` = '1' while the coupon is in
--                   `<prefix>coupons:unpersisted` with score >= `epoch`. Its absence means the state is not
--                   loaded.
--   KEYS[2] stock   string integer: issuances left.
--   KEYS[3] issued  hash user id -> issued_at (microseconds since the epoch): who holds the coupon.
--   KEYS[4] queue   stream of issuances for the MySQL writer: one entry per call that issued any, with
--                   `u` = the user ids issued, comma-separated, `t` = their issued_at and `g` = the
--                   generation that decided them (the writer inserts only entries of MySQL's generation).
-- ARGV:
--   ARGV[1]         now, microseconds since the Unix epoch (the caller's clock; it becomes issued_at). The
--                   writer re-deciding an entry of an older generation passes the entry's own issued_at.
--   ARGV[2]         the listing epoch the caller has just written to `<prefix>coupons:unpersisted` (ZADD GT),
--                   or '0' when it wrote none.
--   ARGV[3..n+2]    the n user ids asking (canonical decimal strings), in arrival order; a user may appear
--                   twice. At most a few thousand per call (Lua's `unpack` limit); the caller sends <= 128.
-- Returns 2n integers, {code, issued_at} for each user in ARGV order:
--   0, now          issued: stock decremented, user recorded, issuance queued
--   1, issued_at    already issued to this user (issued_at of the first issuance)
--   2, 0            sold out
--   3, 0            outside the active window
--   4, 0            (for every user, nothing decided) state not loaded or not whole (Redis lost it, or one of its
--                   keys): the caller rebuilds it from MySQL and what is left of it, then retries
--   5, epoch        (for every user, nothing decided or written) some user would win but the coupon is not
--                   listed: the caller adds the coupon to `<prefix>coupons:unpersisted` with this epoch as
--                   score (ZADD GT), then calls again with ARGV[2] = epoch
--
-- Why the listing: the user-coupon list must show an issuance from its 201 on, before the writer persisted
-- it, without asking every campaign's `issued` hash. It asks only the coupons of the sorted set
-- `<prefix>coupons:unpersisted`, which lives in another cluster slot and so cannot be written here. The
-- invariant: while this coupon's stream holds an entry, `listed` is '1' and the set holds the coupon with a
-- score >= `epoch`. Entries are queued only while `listed` is '1'; `listed` is set only by a call whose
-- caller has written the set first (ARGV[2] = epoch + 1); the writer clears it only when the stream is
-- empty (coupon_unlist.lua), and removes the coupon from the set only if its score is still at most that
-- epoch (coupon_delist.lua), so a listing made meanwhile (a higher score) survives. In steady state this
-- costs nothing: the coupon stays listed while it sells, and two more fields are read.
--
-- Why several users per call: the caller coalesces the requests that arrive while earlier calls are in
-- flight, so a burst pays one round trip and one script invocation per batch instead of per request.
-- Nothing runs between two users of a batch that could not also have run between two single calls: the
-- script is atomic, and each user is decided exactly as a call of its own would decide it.
--
-- Why a constant number of Redis commands per call (HMGET, GET, HLEN, EXISTS, HMGET, then HSET, XADD, DECRBY
-- if any user won) rather than a few per user: each `redis.call` costs Redis about a microsecond of its own,
-- which per user was most of the script's time. One stream entry per call likewise cuts what the writer
-- reads, decodes and acknowledges by the batch size.
--
-- Why a stream per coupon: every key of one script call must live in one cluster slot, so the queue shares
-- the coupon's hash tag. The writer finds the streams through the registry set `<prefix>coupons` (written
-- when a coupon is created or rebuilt) and reads them with XREADGROUP one stream per command, pipelined,
-- because one XREADGROUP naming several streams only works when they share a slot.
--
-- Why the state checks itself: a key of the coupon can vanish while `meta` stays (an operator's DEL, an
-- eviction, a bad script). Without `issued` every holder would win again; without `stock` every ask would be
-- sold out; without the stream the writer would never persist what it held. So before deciding anything the
-- state must be whole: `stock` exists and is `total` minus the users `issued` holds (never below 0), and the
-- stream exists (it is created with the state and never deleted while the state lives). Both are O(1) reads.
-- The stock and the holders are written in the same atomic step, so they always agree: a stock that does
-- not match the holders means one of the two keys was lost.
--
-- Algorithm: the holders among the users are read at once; then for each user the checks run in the
-- contract's order (duplicate, also of a user won earlier in this call; window; stock), and a user who
-- passes them all counts as won. The winners are recorded with the issue time, queued as one entry, and
-- counted off the stock, in three writes. Equivalent to deciding them one by one because no other command
-- interleaves. Every reply is compared explicitly (`== false`, `~= false`): in Lua 0 is true.
local users = #ARGV - 2
local now = tonumber(ARGV[1])
local replies = {}

local function refuse_all(code, value)
    for i = 1, users do
        replies[2 * i - 1] = code
        replies[2 * i] = value
    end
    return replies
end

local window = redis.call('HMGET', KEYS[1], 'starts', 'ends', 'gen', 'epoch', 'listed', 'total')
if window[1] == false or window[6] == false then
    return refuse_all(4, 0)
end
local stock = redis.call('GET', KEYS[2])
if stock == false or tonumber(stock) ~= math.max(tonumber(window[6]) - redis.call('HLEN', KEYS[3]), 0)
    or redis.call('EXISTS', KEYS[4]) ~= 1 then
    return refuse_all(4, 0)
end
stock = tonumber(stock)
if users == 0 then
    return replies
end

local active = now >= tonumber(window[1]) and (window[2] == false or now < tonumber(window[2]))
local held = redis.call('HMGET', KEYS[3], unpack(ARGV, 3))
-- Users issued by this call: `fields` for the HSET (user, now, user, now, ...), `winners` for the entry.
local fields, winners, won = {}, {}, {}

for i = 1, users do
    local user = ARGV[i + 2]
    local code, at = 0, now
    if held[i] ~= false then
        code, at = 1, tonumber(held[i])
    elseif won[user] then
        code = 1
    elseif not active then
        code, at = 3, 0
    elseif #winners >= stock then
        code, at = 2, 0
    else
        won[user] = true
        winners[#winners + 1] = user
        fields[#fields + 1] = user
        fields[#fields + 1] = ARGV[1]
    end
    replies[2 * i - 1] = code
    replies[2 * i] = at
end

if #winners == 0 then
    return replies
end
if window[5] ~= '1' then
    local next_epoch = tonumber(window[4] or window[3] or '0') + 1
    if tonumber(ARGV[2]) ~= next_epoch then
        -- Decide nothing: the caller lists the coupon and asks again.
        return refuse_all(5, next_epoch)
    end
    redis.call('HSET', KEYS[1], 'epoch', next_epoch, 'listed', '1')
end
redis.call('HSET', KEYS[3], unpack(fields))
redis.call('XADD', KEYS[4], '*', 'u', table.concat(winners, ','), 't', ARGV[1], 'g', window[3] or '0')
redis.call('DECRBY', KEYS[2], #winners)
return replies
