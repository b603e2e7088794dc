-- KEYS: jobs, waiting, delayed. ARGV: id.
-- Removes a job that has not started: out of `waiting` or `delayed`, its record dropped. An active
-- job (or one that ended) is left alone. Returns 1 if removed.
local id = ARGV[1]
if redis.call('lrem', KEYS[2], 0, id) + redis.call('zrem', KEYS[3], id) == 0 then return 0 end
redis.call('hdel', KEYS[1], id)
return 1
