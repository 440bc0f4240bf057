-- Drops a view batch once its counts are durable in MySQL.
--
-- KEYS[1]  hash of the batch being flushed (field `batch` = its id)
-- ARGV[1]  id of the batch the caller applied
--
-- Returns 1 when the batch was dropped, 0 when the hash holds another batch (or none) and was left alone.
--
-- Algorithm: compare-and-delete. Two instances may flush the same batch; the second must not delete a
-- newer batch that was taken after the first one acknowledged.
if redis.call('HGET', KEYS[1], 'batch') == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return 1
end
return 0
