-- Takes a slot for one open progress stream of a user, unless the user holds ARGV[2] already.
-- KEYS[1]: the user's open streams, a sorted set of stream ids scored by their last heartbeat
--          (milliseconds of Redis' clock, so the API processes' clocks need not agree).
-- ARGV[1]: the new stream's id; ARGV[2]: the most streams at once; ARGV[3]: how long (ms) a slot
--          lives without a heartbeat (its process died): older ones are dropped first.
-- Returns 1 (taken) or 0 (refused).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
