-- wrk script: POST /api/v1/coupons/$COUPON/issue, every request for a different user id.
--
-- Env: COUPON (coupon id), FIRST_USER (lowest user id to use, default 1), USERS (how many ids exist,
-- default 1000000; ids wrap around, so a second run with the same range gets 409 ALREADY_ISSUED), TOKENS
-- (a file of their tokens, see tokens.lua; USERS is then at most its line count).
-- Prints the count of each status at the end, so a run shows how many were 201, 409 or 410.
--
--   COUPON=1 wrk -t2 -c128 -d10s -s loadtest/wrk/issue.lua http://127.0.0.1:8080
-- Thread index and per-status counts, from the file beside this one.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "status_counts.lua")
-- User tokens (TOKENS), from the file beside this one.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "tokens.lua")

function init(args)
    coupon = os.getenv("COUPON") or "1"
    first = tonumber(os.getenv("FIRST_USER") or "1")
    tokens = load_tokens()
    users = users_with_tokens(tokens, tonumber(os.getenv("USERS") or "1000000"))
    -- THREADS must equal wrk's -t. Each thread walks its own residue class of user ids, so threads never repeat each other's ids.
    stride = tonumber(os.getenv("THREADS") or "2")
    next_user = thread_index
    path = "/api/v1/coupons/" .. coupon .. "/issue"
end

function request()
    local offset = next_user % users
    next_user = next_user + stride
    return wrk.format("POST", path, user_headers(tokens, offset), '{"userId":' .. (first + offset) .. '}')
end
