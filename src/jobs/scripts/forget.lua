-- KEYS: jobs, succeeded, failed, succeededAt, failedAt. ARGV: id.
-- Drops a kept job that ended (its record and its place in the `succeeded` or `failed` set), so
-- that a job of the same id can be added again. A job that is waiting, delayed or active is left
-- alone. Returns 1 if one was dropped.
local id = ARGV[1]
if redis.call('srem', KEYS[2], id) + redis.call('srem', KEYS[3], id) == 0 then return 0 end
redis.call('hdel', KEYS[1], id)
redis.call('zrem', KEYS[4], id)
redis.call('zrem', KEYS[5], id)
return 1
