-- Shared by the wrk scripts here (loaded with dofile): gives each thread a `thread_index` (0, 1, ...),
-- counts responses per status in every thread, and prints the totals when the run ends.
local threads = {}

function setup(thread)
    thread:set("thread_index", #threads)
    thread:set("statuses", {})
    table.insert(threads, thread)
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local totals = {}
    for _, thread in ipairs(threads) do
        for status, count in pairs(thread:get("statuses")) do
            totals[status] = (totals[status] or 0) + count
        end
    end
    for status, count in pairs(totals) do
        io.write(string.format("status %d: %d\n", status, count))
    end
end
