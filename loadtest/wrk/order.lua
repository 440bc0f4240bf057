-- wrk script: POST /api/v1/orders with "pay": true (create and pay in one call), one unit of one product.
--
-- Env: FIRST_USER / USERS (buyers, who need balance: charge them first with charge.lua), FIRST_PRODUCT /
-- PRODUCTS (the products bought, round robin, each sold in one option; PRODUCTS=1 is the hot-product worst
-- case), THREADS (= -t). LINES=<file> buys named options instead: one "productId optionId" per line, round
-- robin (a file of one line is the hot-option worst case). TOKENS: the buyers' tokens (see tokens.lua).
--
--   FIRST_USER=2 USERS=20000 FIRST_PRODUCT=1 PRODUCTS=1000 wrk -t2 -c64 -d10s -s loadtest/wrk/order.lua http://127.0.0.1:8080
-- Thread index and per-status counts, from the file beside this one.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "status_counts.lua")
-- User tokens (TOKENS), from the file beside this one.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "tokens.lua")

function init(args)
    first_user = tonumber(os.getenv("FIRST_USER") or "1")
    tokens = load_tokens()
    users = users_with_tokens(tokens, tonumber(os.getenv("USERS") or "20000"))
    first_product = tonumber(os.getenv("FIRST_PRODUCT") or "1")
    products = tonumber(os.getenv("PRODUCTS") or "1000")
    stride = tonumber(os.getenv("THREADS") or "2")
    n = thread_index
    lines = {}
    local file = os.getenv("LINES")
    if file then
        for line in io.lines(file) do
            local product, option = line:match("^(%d+)%s+(%d+)")
            if product then
                table.insert(lines, string.format('{"productId":%s,"optionId":%s,"quantity":1}', product, option))
            end
        end
    end
end

function request()
    local offset = n % users
    local item
    if #lines > 0 then
        item = lines[(n % #lines) + 1]
    else
        item = string.format('{"productId":%d,"quantity":1}', first_product + (n % products))
    end
    n = n + stride
    local body = string.format('{"userId":%d,"items":[%s],"pay":true}', first_user + offset, item)
    return wrk.format("POST", "/api/v1/orders", user_headers(tokens, offset), body)
end
