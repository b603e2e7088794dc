-- KEYS: active, jobs. ARGV: id, record. Stores the record only while the job is still active (not
-- finished, removed or put back by a stall check meanwhile). Returns 1 if stored.
if redis.call('lpos', KEYS[1], ARGV[1]) then
  redis.call('hset', KEYS[2], ARGV[1], ARGV[2])
  return 1
end
return 0
