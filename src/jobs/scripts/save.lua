-- KEYS: active, jobs, stalls. ARGV: id, record, the job's stall count when this delivery took it.
-- Stores the record only while the job is still this delivery's: active (not finished, removed or
-- put back by a stall check meanwhile) and not put back since it was taken (a copy another worker
-- took then owns the record). Returns 1 if stored.
if redis.call('lpos', KEYS[1], ARGV[1]) and tonumber(redis.call('hget', KEYS[3], ARGV[1]) or '0') == tonumber(ARGV[3]) then
  redis.call('hset', KEYS[2], ARGV[1], ARGV[2])
  return 1
end
return 0
