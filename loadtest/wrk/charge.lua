-- wrk script: POST /api/v1/users/{id}/balance/charge {"amount": $AMOUNT (default 1)} spread over USERS user ids.
--
--   USERS=100000 wrk -t2 -c64 -d10s -s loadtest/wrk/charge.lua http://127.0.0.1:8080
local threads = {}

function setup(thread)
    thread:set("thread_index", #threads)
    table.insert(threads, thread)
end

function init(args)
    first = tonumber(os.getenv("FIRST_USER") or "1")
    users = tonumber(os.getenv("USERS") or "100000")
    next_user = thread_index
    statuses = {}
end

function request()
    local user = first + (next_user % users)
    next_user = next_user + tonumber(os.getenv("THREADS") or "2")
    return wrk.format("POST", "/api/v1/users/" .. user .. "/balance/charge",
        { ["Content-Type"] = "application/json" }, '{"amount":' .. (os.getenv("AMOUNT") or "1") .. '}')
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    for _, thread in ipairs(threads) do
        for status, count in pairs(thread:get("statuses")) do
            io.write(string.format("status %d: %d\n", status, count))
        end
    end
end
