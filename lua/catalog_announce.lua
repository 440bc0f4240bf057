-- Announces that products changed in MySQL (a payment or restock committed, views flushed, a product or
-- option created), so every instance drops its in-process copies of them.
--
-- KEYS[1]  <prefix>catalog:{catalog}:version  integer, raised by every announcement
-- KEYS[2]  <prefix>catalog:{catalog}:changed  sorted set, member = product id (or `all`, or `v<id>`: the
--                                             product's views were flushed to MySQL), score = the version
--                                             that last announced it
-- ARGV[1]  how many versions the sorted set remembers; an instance further behind drops everything
-- ARGV[2..] product ids (a new product too), `all` for a change of the whole catalogue (earlier builds sent
--           it for a product created), or `v<id>`
--
-- Returns the new version.
--
-- Algorithm: INCR the version, ZADD each member with it (a member announced again just moves up), and drop
-- members older than the horizon, so the set holds at most one entry per product announced lately.
local version = redis.call('INCR', KEYS[1])
for i = 2, #ARGV do
    redis.call('ZADD', KEYS[2], version, ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', version - tonumber(ARGV[1]))
return version
