-- KEYS: delayed, waiting. ARGV: now (ms), the most to move in one call.
-- Moves the retries that are due to the queue; returns {how many, the next one's time or -1}.
local due = redis.call('zrangebyscore', KEYS[1], 0, ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #due > 0 then
  redis.call('lpush', KEYS[2], unpack(due))
  redis.call('zrem', KEYS[1], unpack(due))
end
local head = redis.call('zrange', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, head[2] or '-1'}
