-- wrk script: GET /api/v1/products/{id} (a product's detail, counting a view) over PRODUCTS ids from
-- FIRST_PRODUCT, round robin per thread.
--
--   FIRST_PRODUCT=1 PRODUCTS=1000 THREADS=2 wrk -t2 -c64 -d10s -s loadtest/wrk/product.lua http://127.0.0.1:8080
-- Thread index and per-status counts, from the file beside this one.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "status_counts.lua")

function init(args)
    first = tonumber(os.getenv("FIRST_PRODUCT") or "1")
    products = tonumber(os.getenv("PRODUCTS") or "1000")
    stride = tonumber(os.getenv("THREADS") or "2")
    n = thread_index
end

function request()
    local product = first + (n % products)
    n = n + stride
    return wrk.format("GET", "/api/v1/products/" .. product)
end
