-- wrk script: POST /api/v1/users/{id}/balance/charge {"amount": $AMOUNT (default 1)} spread over USERS user ids
-- from FIRST_USER, each with its token from TOKENS (see tokens.lua) when set.
--
--   USERS=100000 wrk -t2 -c64 -d10s -s loadtest/wrk/charge.lua http://127.0.0.1:8080
-- Thread index and per-status counts, from the file beside this one.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "status_counts.lua")
-- User tokens (TOKENS), from the file beside this one.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "tokens.lua")

function init(args)
    first = tonumber(os.getenv("FIRST_USER") or "1")
    tokens = load_tokens()
    users = users_with_tokens(tokens, tonumber(os.getenv("USERS") or "100000"))
    -- THREADS must equal wrk's -t; read once here, not on every request.
    stride = tonumber(os.getenv("THREADS") or "2")
    body = '{"amount":' .. (os.getenv("AMOUNT") or "1") .. '}'
    next_user = thread_index
end

function request()
    local offset = next_user % users
    next_user = next_user + stride
    return wrk.format("POST", "/api/v1/users/" .. (first + offset) .. "/balance/charge",
        user_headers(tokens, offset), body)
end
