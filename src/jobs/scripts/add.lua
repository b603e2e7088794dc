-- KEYS: jobs, waiting, succeeded, failed, succeededAt, failedAt. ARGV: id, record.
-- Bee-Queue's addJob.lua for a job with an id of its own (the record in `jobs`, the id LPUSHed on
-- `waiting`, nil for an id that exists), in one call with what used to be a second one: a job of
-- that id that has ended and is only kept for the dashboard (QUEUE_KEEP_*) is let go first, as if it
-- had been removed when it ended (forget.lua). Returns the id if added, nil if a job of that id is
-- still waiting, delayed or active.
local id = ARGV[1]
if redis.call('hexists', KEYS[1], id) == 1 then
  if redis.call('srem', KEYS[3], id) + redis.call('srem', KEYS[4], id) == 0 then return nil end
  redis.call('zrem', KEYS[5], id)
  redis.call('zrem', KEYS[6], id)
end
redis.call('hset', KEYS[1], id, ARGV[2])
redis.call('lpush', KEYS[2], id)
return id
