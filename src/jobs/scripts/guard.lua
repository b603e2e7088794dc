-- KEYS: stallBlock, stalling, waiting, active, stalls. ARGV: the stall interval (ms), then the ids
-- of the jobs this consumer holds. Returns the ids put back in the queue.
--
-- First vouches for this consumer's jobs (removes them from `stalling`). Then, at most once per
-- interval across all workers (the stallBlock key), Bee-Queue's check: whatever is still in
-- `stalling` was in `active` at the previous check and nobody vouched for it since, so its worker is
-- gone: it goes back to the queue (LPUSH: behind the jobs already waiting, so a job that kills its
-- workers cannot starve the rest). Then every active job is marked as stalling until vouched for.
--
-- Ours besides: `stalls` counts, per job, how often it was put back this way. A delivery carries the
-- count it was taken with, so the end of a run that was put back while it still ran (a worker
-- whose vouching stopped, not one that died) is known to be stale: take.lua leaves the job to the
-- copy taken since. The count also makes a re-delivery a new attempt (the runner's `attempt`).
for i = 2, #ARGV do redis.call('srem', KEYS[2], ARGV[i]) end
if not redis.call('set', KEYS[1], '1', 'PX', tonumber(ARGV[1]), 'NX') then return {} end
local stalled = {}
for _, id in ipairs(redis.call('smembers', KEYS[2])) do
  if redis.call('lrem', KEYS[4], 0, id) > 0 then
    stalled[#stalled + 1] = id
    redis.call('lpush', KEYS[3], id)
    redis.call('hincrby', KEYS[5], id, 1)
  end
end
redis.call('del', KEYS[2])
for _, id in ipairs(redis.call('lrange', KEYS[4], 0, -1)) do redis.call('sadd', KEYS[2], id) end
return stalled
