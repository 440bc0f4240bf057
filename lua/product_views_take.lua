-- Hands the view flusher one batch of counted views, moving them out of the way of new views.
--
-- KEYS[1]  hash of views not yet in a batch: field = product id, value = views
-- KEYS[2]  hash of the batch being flushed: same fields, plus field `batch` = the batch id
-- ARGV[1]  a fresh, never reused batch id (a UUID) to name a new batch
--
-- Returns the batch hash as a flat array (field, value, ...), or an empty array when there is nothing to
-- flush.
--
-- Algorithm: an unfinished batch (its flusher died, or has not acknowledged yet) is handed out again as is,
-- under its old id, so the flusher's MySQL batch-id check can tell whether it was already applied.
-- Otherwise the pending hash is renamed into the batch (O(1), new views start a fresh pending hash) and
-- stamped with the new id.
if redis.call('EXISTS', KEYS[2]) == 1 then
    return redis.call('HGETALL', KEYS[2])
end
if redis.call('EXISTS', KEYS[1]) == 0 then
    return {}
end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[2], 'batch', ARGV[1])
return redis.call('HGETALL', KEYS[2])
