-- One shard's best sellers for every window of 1..D days ending today, read from window sets kept per shard:
-- each made by ZUNIONSTORE of the shard's day sets, then kept current by folding in the units recorded
-- since. One call does a bounded share of the work; the caller calls again while it answers 'more'.
--
-- KEYS[1]         <prefix>sales:{rank:<s>}:windows            hash: the state of the window sets (below)
-- KEYS[2..D]      <prefix>sales:{rank:<s>}:window:<k>d        the window set of k = 2..D days (member = product
--                                                             id, score = units); the 1-day window is today's set
-- KEYS[D+1..2D]   <prefix>sales:{rank:<s>}:YYYYMMDD           the shard's day sets, today first, D >= 2
-- KEYS[2D+1..3D]  <prefix>sales:{rank:<s>}:unfolded:YYYYMMDD  per day, same order: units added to the day set
--                                                             that the window sets do not hold yet
-- KEYS[3D+1..4D]  <prefix>sales:{rank:<s>}:rebuilt:YYYYMMDD   the days' rebuild markers, same order
-- ARGV[1]  n: entries wanted per window (the largest `limit` served), >= 1
-- ARGV[2]  the shard count the markers must hold to count as present (RANKING_SHARDS)
-- ARGV[3]  today, ARGV[4] yesterday, both YYYYMMDD
-- ARGV[5]  union budget: members one call may feed to ZUNIONSTORE (its first union runs whatever its size)
-- ARGV[6]  fold budget: ZINCRBYs one call may run
-- ARGV[7]  TTL of the state and the window sets, in seconds
--
-- Returns { 'more' } when the budget ran out with work left; else { 'top', marked, window_1, ..., window_D }:
-- `marked` is D integers, 1 when the day's marker holds ARGV[2], else 0; `window_d` is a flat array member,
-- score, member, score, ... of the window of d days, highest score first: the n best members, plus every
-- further member tied with the n-th (so the caller can break ties by product id, which Redis cannot: equal
-- scores go by member string), or all members when the window has fewer than n.
--
-- State (KEYS[1]): `today`, the day the window sets end on; `made`, the largest k whose window set is made
-- (1: none is); `card:<k>`, the member count of window set k when last written. A window set found with
-- another count was lost (expired, evicted, deleted): every window is made again.
--
-- Invariant, per member and per window k <= made of the state's day: window_k + the sum of unfolded_j over
-- days j < k = the sum of day_j over j < k, the ZUNIONSTORE of the window's day sets. The relay keeps it
-- (lua/ranking_record_sales.lua adds an order's units to a day set and its unfolded set in one call), a
-- rebuild keeps it (lua/ranking_replace_day.lua adds the difference it makes to the unfolded set), and so
-- does each step here:
--   make   window k+1 = ZUNIONSTORE of window k and day k (window 1 being today's set), then unfolded k
--          (and unfolded 0 when k = 1) emptied: the new window holds those days whole. Used when the sets
--          end on another day or were lost, and when folding would take more calls than making them anew.
--   fold   only once every window is made: pop members of unfolded j and ZINCRBY them into every window
--          k > j (k >= 2); a member left at 0 units or less (a rebuild took units away) is removed, as a
--          ZUNIONSTORE of the day sets would not hold it.
--   shift  the sets end yesterday, are all made, and everything unfolded of yesterday's days is folded in:
--          window k+1 of today = window k of yesterday (RENAME), window 2 = a COPY of yesterday's set, and
--          unfolded 0 = a COPY of today's set, which the fold then adds to every window (few members just
--          after midnight, else making anew is chosen as below).
-- So one call runs at most a budget of unions or of ZINCRBYs (plus the read, and a shift's two copies),
-- which is what bounds how long it holds Redis, and a refresh with few new sales costs few ZINCRBYs
-- instead of every union again. Then
-- the top of each window: its n-th score (ZREVRANGE n-1 n-1) and every member scoring at least that
-- (ZREVRANGEBYSCORE +inf that). A window set is replaced only after UNLINK, so freeing the old one happens on
-- Redis's background thread. Every key carries the shard's hash tag: one slot. A missing set is empty.
local D = #KEYS / 4
local n = tonumber(ARGV[1])
local today, yesterday = ARGV[3], ARGV[4]
local union_budget, fold_budget = tonumber(ARGV[5]), tonumber(ARGV[6])
local union_left, fold_left = union_budget, fold_budget

local function window(k)
    if k == 1 then
        return KEYS[D + 1]
    end
    return KEYS[k]
end
local function day(j)
    return KEYS[D + 1 + j]
end
local function unfolded(j)
    return KEYS[2 * D + 1 + j]
end
local function marker(j)
    return KEYS[3 * D + 1 + j]
end
local function card(key)
    return redis.call('ZCARD', key)
end

local state = {}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
    state[fields[i]] = fields[i + 1]
end
local made_for = state.today
local made = tonumber(state.made) or 0
for k = 2, made do
    if tonumber(state['card:' .. k]) ~= card(window(k)) then
        made = 0
    end
end
local dirty = false

-- Writes the state back and renews the TTLs, if this call changed anything.
local function save()
    if not dirty then
        return
    end
    local hash = { 'today', made_for, 'made', made }
    for k = 2, made do
        hash[#hash + 1] = 'card:' .. k
        hash[#hash + 1] = card(window(k))
    end
    redis.call('HSET', KEYS[1], unpack(hash))
    redis.call('EXPIRE', KEYS[1], ARGV[7])
    for k = 2, D do
        redis.call('EXPIRE', window(k), ARGV[7])
    end
end

local function more()
    save()
    return { 'more' }
end

local function start_over()
    made_for, made, dirty = today, 1, true
end

-- ZINCRBYs of folding every unfolded day (`shift` 1: into windows that still end yesterday).
local function unfolded_ops(shift)
    local ops = 0
    for j = shift, D - 1 do
        ops = ops + card(unfolded(j)) * (D - math.max(2, j + 1 - shift) + 1)
    end
    return ops
end

-- Folds unfolded units within the budget; `shift` 1 when the windows still end yesterday (day j of today
-- is then day j-1 of theirs, and today's own units are not theirs to hold). Returns whether all are folded.
local function fold(shift)
    for j = shift, D - 1 do
        local from = math.max(2, j + 1 - shift)
        local per = D - from + 1
        while redis.call('EXISTS', unfolded(j)) == 1 do
            local take = math.floor(fold_left / per)
            if take < 1 then
                return false
            end
            local popped = redis.call('ZPOPMAX', unfolded(j), take)
            for i = 1, #popped, 2 do
                for k = from, D do
                    if tonumber(redis.call('ZINCRBY', window(k), popped[i + 1], popped[i])) <= 0 then
                        redis.call('ZREM', window(k), popped[i])
                    end
                end
            end
            fold_left = fold_left - per * #popped / 2
            dirty = true
        end
    end
    return true
end

local function shift()
    redis.call('UNLINK', window(D))
    for k = D - 1, 2, -1 do
        if redis.call('EXISTS', window(k)) == 1 then
            redis.call('RENAME', window(k), window(k + 1))
        end
    end
    union_left = union_left - card(day(1)) - card(day(0))
    if redis.call('EXISTS', day(1)) == 1 then
        redis.call('COPY', day(1), window(2))
    end
    redis.call('UNLINK', unfolded(0))
    if redis.call('EXISTS', day(0)) == 1 then
        redis.call('COPY', day(0), unfolded(0))
    end
    made_for, dirty = today, true
end

-- 1. Window sets of today, by moving yesterday's on a day or by starting over.
if made == 0 or made_for ~= today then
    if made == D and made_for == yesterday then
        if not fold(1) then
            return more()
        end
        shift()
    else
        start_over()
    end
end

-- 2. Making every window anew may take fewer calls than folding what is unfolded.
if made == D then
    local members = 0
    for k = 1, D - 1 do
        members = members + card(window(k)) + card(day(k))
    end
    if unfolded_ops(0) / fold_budget > members / union_budget then
        start_over()
    end
end

-- 3. Make the windows not made yet, a union at a time.
local unions = 0
while made < D do
    local members = card(window(made)) + card(day(made))
    if unions > 0 and members > union_left then
        return more()
    end
    redis.call('UNLINK', window(made + 1))
    redis.call('ZUNIONSTORE', window(made + 1), 2, window(made), day(made))
    if made == 1 then
        redis.call('DEL', unfolded(0))
    end
    redis.call('DEL', unfolded(made))
    made, unions, union_left, dirty = made + 1, unions + 1, union_left - members, true
end

-- 4. Fold what the relay (or a rebuild) added since.
if not fold(0) then
    return more()
end
save()

-- 5. The top of every window.
local marked = {}
local reply = { 'top', marked }
for k = 1, D do
    local nth = redis.call('ZREVRANGE', window(k), n - 1, n - 1, 'WITHSCORES')
    if #nth == 0 then
        reply[k + 2] = redis.call('ZREVRANGE', window(k), 0, -1, 'WITHSCORES')
    else
        reply[k + 2] = redis.call('ZREVRANGEBYSCORE', window(k), '+inf', nth[2], 'WITHSCORES')
    end
    if redis.call('GET', marker(k - 1)) == ARGV[2] then
        marked[k] = 1
    else
        marked[k] = 0
    end
end
return reply
