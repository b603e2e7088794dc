-- Renews the slots of a user's streams that are still open in this process (their heartbeat).
-- Adds them back if they are missing (taken while Redis was away, or Redis lost them).
-- KEYS[1]: the user's open streams (see acquireStreamSlot.lua); ARGV[1]: a slot's lifetime without
-- a heartbeat (ms); ARGV[2..]: the stream ids.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return #ARGV - 1
