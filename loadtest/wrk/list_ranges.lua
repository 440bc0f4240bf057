-- wrk script: GET /api/v1/products?status=ON_SALE&minPrice=<m>&maxPrice=<m + SPAN>&sort=-sold, with m a
-- different whole number of won on almost every request, so nearly every page is computed anew from the
-- catalogue copy instead of served from the computed pages (the listing's worst case short of a change).
--
--   SPAN=30000 THREADS=2 wrk -t2 -c64 -d10s -s loadtest/wrk/list_ranges.lua http://127.0.0.1:8080
-- Thread index and per-status counts, from the file beside this one.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "status_counts.lua")

function init(args)
    span = tonumber(os.getenv("SPAN") or "30000")
    stride = tonumber(os.getenv("THREADS") or "2")
    n = thread_index
end

function request()
    -- 7919 is prime, so consecutive requests walk all of 0..99999 before repeating.
    local min = (n * 7919) % 100000
    n = n + stride
    return wrk.format("GET", "/api/v1/products?status=ON_SALE&minPrice=" .. min .. "&maxPrice=" .. (min + span) .. "&sort=-sold")
end
