-- KEYS: stallBlock, stalling, waiting, active. ARGV: the stall interval (ms), then the ids of the
-- jobs this consumer holds. Returns the ids put back in the queue.
--
-- First vouches for this consumer's jobs (removes them from `stalling`). Then, at most once per
-- interval across all workers (the stallBlock key), Bee-Queue's check: whatever is still in
-- `stalling` was in `active` at the previous check and nobody vouched for it since, so its worker is
-- gone: it goes back to the queue (LPUSH: behind the jobs already waiting, so a job that kills its
-- workers cannot starve the rest). Then every active job is marked as stalling until vouched for.
for i = 2, #ARGV do redis.call('srem', KEYS[2], ARGV[i]) end
if not redis.call('set', KEYS[1], '1', 'PX', tonumber(ARGV[1]), 'NX') then return {} end
local stalled = {}
for _, id in ipairs(redis.call('smembers', KEYS[2])) do
  if redis.call('lrem', KEYS[4], 0, id) > 0 then
    stalled[#stalled + 1] = id
    redis.call('lpush', KEYS[3], id)
  end
end
redis.call('del', KEYS[2])
for _, id in ipairs(redis.call('lrange', KEYS[4], 0, -1)) do redis.call('sadd', KEYS[2], id) end
return stalled
