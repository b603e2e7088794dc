-- KEYS: waiting, active, stalling, jobs, delayed, earlierDelayed, succeeded, failed, succeededAt,
-- failedAt, stalls.
-- ARGV: now (ms), how many jobs to take, how many ended jobs follow, how many released ids follow,
-- how many succeeded and failed jobs to keep, then 5 values per ended job (id, s|f|r, the record to
-- store (for a retry, or for a success or failure that is kept; empty: not kept), the retry delay in
-- ms, the job's stall count when it was taken), the released ids (taken, but the consumer is
-- closing: back to the front of the queue), then ids a blocking wait moved to `active`, whose
-- records are wanted.
-- Returns {taken from waiting, how many stale ends, the stale ids..., then per job handed out: id,
-- record, stall count}.
--
-- An end is stale when a stall check put the job back in the queue after this delivery took it
-- (its count in `stalls`, which guard.lua raises, differs from the one it was taken with) and
-- another delivery has taken it since (it is in `active` again): the run outlived its vouching,
-- and the copy owns the job. A stale end changes nothing: it neither removes that copy's entry
-- from `active` nor touches the record. (Put back but not taken yet, it is handled as below.)
--
-- A retry is stored only if the job was still in `active`: otherwise a stall check has already put
-- it back in the queue (it runs again as it is) or it was removed, and either way re-adding it would
-- run it twice. A success or a final failure removes the record even then, so a copy that a stall
-- check put back is dropped unrun when it is taken. An id whose record is gone (removed while it
-- waited) is dropped from `active` at once rather than left there for a stall check to re-queue. A
-- claimed id that is no longer in `active` (a stall check moved it back while the reply was on its
-- way) is left to whoever takes it from the queue.
--
-- A success or final failure is kept as Bee-Queue keeps one with removeOnSuccess/removeOnFailure
-- off (its record, with its status, stays in `jobs`; its id joins the `succeeded` or `failed` set),
-- so dashboards list it; beyond the newest `keep` of a state (their end times are in the
-- `succeededAt` / `failedAt` zsets) the oldest are dropped, record and all. Its stall count goes.
local now = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local ended = tonumber(ARGV[3])
local released = tonumber(ARGV[4])
local keep = {s = tonumber(ARGV[5]), f = tonumber(ARGV[6])}
local kept = {s = {KEYS[7], KEYS[9]}, f = {KEYS[8], KEYS[10]}}
local stalls = function(id) return tonumber(redis.call('hget', KEYS[11], id) or '0') end
local stale = {}
local i = 7
for _ = 1, ended do
  local id, how = ARGV[i], ARGV[i + 1]
  local removed = 0
  if stalls(id) ~= tonumber(ARGV[i + 4]) and redis.call('lpos', KEYS[2], id) then
    stale[#stale + 1] = id
    how = 'stale'
  else
    removed = redis.call('lrem', KEYS[2], 0, id)
    redis.call('srem', KEYS[3], id)
  end
  if how == 'stale' then
    -- Another delivery owns the job now.
  elseif how == 'r' then
    if removed > 0 then
      redis.call('hset', KEYS[4], id, ARGV[i + 2])
      local delay = tonumber(ARGV[i + 3]) or 0
      if delay > 0 then
        redis.call('zadd', KEYS[5], now + delay, id)
        redis.call('publish', KEYS[6], now + delay)
      else
        redis.call('lpush', KEYS[1], id)
      end
    end
  elseif removed > 0 and keep[how] > 0 and ARGV[i + 2] ~= '' then
    redis.call('hdel', KEYS[11], id)
    local set, at = kept[how][1], kept[how][2]
    redis.call('hset', KEYS[4], id, ARGV[i + 2])
    redis.call('sadd', set, id)
    redis.call('zadd', at, now, id)
    while redis.call('scard', set) > keep[how] do
      local oldest = redis.call('zpopmin', at)
      if #oldest == 0 then break end
      -- Only while it is still kept: a retried or re-added job of that id owns the record now.
      if redis.call('srem', set, oldest[1]) == 1 then redis.call('hdel', KEYS[4], oldest[1]) end
    end
  else
    redis.call('hdel', KEYS[4], id)
    redis.call('hdel', KEYS[11], id)
  end
  i = i + 5
end
for _ = 1, released do
  if redis.call('lrem', KEYS[2], 0, ARGV[i]) > 0 then
    redis.call('rpush', KEYS[1], ARGV[i])
  end
  i = i + 1
end
local out = {0, #stale}
for _, id in ipairs(stale) do out[#out + 1] = id end
for j = i, #ARGV do
  local id = ARGV[j]
  local record = redis.call('hget', KEYS[4], id)
  if not record then
    redis.call('lrem', KEYS[2], 0, id)
    redis.call('hdel', KEYS[11], id)
  elseif redis.call('lpos', KEYS[2], id) then
    redis.call('srem', KEYS[3], id)
    out[#out + 1] = id
    out[#out + 1] = record
    out[#out + 1] = stalls(id)
  end
end
local taken = 0
while taken < want do
  local id = redis.call('rpoplpush', KEYS[1], KEYS[2])
  if not id then break end
  local record = redis.call('hget', KEYS[4], id)
  if record then
    taken = taken + 1
    redis.call('srem', KEYS[3], id)
    out[#out + 1] = id
    out[#out + 1] = record
    out[#out + 1] = stalls(id)
  else
    redis.call('lrem', KEYS[2], 0, id)
    redis.call('hdel', KEYS[11], id)
  end
end
out[1] = taken
return out
