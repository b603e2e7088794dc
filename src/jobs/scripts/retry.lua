-- KEYS: jobs, failed, failedAt, waiting. ARGV: id, the record as it was read, the record to queue.
-- Puts a kept failed job back in the queue (behind the jobs already waiting), with the new record,
-- only if it is still the failed job that was read: a job removed or retried meanwhile is left
-- alone. Returns 1 if queued.
local id = ARGV[1]
if redis.call('sismember', KEYS[2], id) == 0 or redis.call('hget', KEYS[1], id) ~= ARGV[2] then return 0 end
redis.call('srem', KEYS[2], id)
redis.call('zrem', KEYS[3], id)
redis.call('hset', KEYS[1], id, ARGV[3])
redis.call('lpush', KEYS[4], id)
return 1
