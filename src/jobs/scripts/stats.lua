-- KEYS: per queue five keys: waiting, active, delayed, jobs (Bee-Queue's) and its outcome totals
-- hash. ARGV: the current minute (epoch minutes), how many minutes make "recently".
-- Returns per queue eight numbers: waiting, active, delayed, the enqueue time (epoch ms) of the job
-- next in line or -1, succeeded and failed (all time), succeeded and failed in the recent minutes.
-- Read-only; the per-minute hashes are `<totals key>:<minute>`, written by count.lua.
local now = tonumber(ARGV[1])
local span = tonumber(ARGV[2])
local out = {}
for q = 1, #KEYS / 5 do
  local base = 5 * (q - 1)
  local waiting, active, delayed, jobs, totals = KEYS[base + 1], KEYS[base + 2], KEYS[base + 3], KEYS[base + 4], KEYS[base + 5]
  out[#out + 1] = redis.call('llen', waiting)
  out[#out + 1] = redis.call('llen', active)
  out[#out + 1] = redis.call('zcard', delayed)
  -- Taken from the right: the last element is the next job, the one that has waited longest.
  local oldest = -1
  local id = redis.call('lindex', waiting, -1)
  if id then
    local record = redis.call('hget', jobs, id)
    if record then
      local ok, job = pcall(cjson.decode, record)
      if ok and type(job) == 'table' and type(job.options) == 'table' and tonumber(job.options.timestamp) then
        oldest = tonumber(job.options.timestamp)
      end
    end
  end
  out[#out + 1] = oldest
  local all = redis.call('hmget', totals, 'succeeded', 'failed')
  out[#out + 1] = tonumber(all[1]) or 0
  out[#out + 1] = tonumber(all[2]) or 0
  local s, f = 0, 0
  for m = now - span + 1, now do
    local recent = redis.call('hmget', totals .. ':' .. m, 'succeeded', 'failed')
    s = s + (tonumber(recent[1]) or 0)
    f = f + (tonumber(recent[2]) or 0)
  end
  out[#out + 1] = s
  out[#out + 1] = f
end
return out
