-- KEYS: per queue, its outcome totals hash then this minute's hash. ARGV: the minute hash's TTL (s),
-- then per queue three counts: succeeded, failed for good, retrying.
-- Adds what one flush of the job-outcome tracker saw; returns how many queues it touched.
local ttl = tonumber(ARGV[1])
local fields = {'succeeded', 'failed', 'retrying'}
for q = 1, #KEYS / 2 do
  local total, minute = KEYS[2 * q - 1], KEYS[2 * q]
  for f = 1, 3 do
    local n = tonumber(ARGV[1 + 3 * (q - 1) + f])
    if n > 0 then
      redis.call('hincrby', total, fields[f], n)
      redis.call('hincrby', minute, fields[f], n)
    end
  end
  redis.call('expire', minute, ttl)
end
return #KEYS / 2
