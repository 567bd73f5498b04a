-- Shared by every docproc Redis script (prepended to each before loading).
-- ARGV[1] is the key prefix; every key the scripts touch starts with it.
-- Time comes from the Redis server (TIME), so processes on different hosts
-- agree on lease deadlines and delays.
--
-- Keys (P = prefix):
--   P:seq                 job id counter
--   P:job:ID              hash: the job and its state
--   P:types               set of job types seen
--   P:ready:TYPE          zset of queued ids, score = (3 - priority) * 2^44 + id
--   P:delayed             zset of pending/retrying ids, score = due (ms)
--   P:leased              zset of processing ids, score = lease deadline (ms)
--   P:finals              zset of final ids, score = finish time (ms)
--   P:idx:TYPE:STATUS     zset of ids by status, score = id (listing)
--   P:depth:TYPE          hash STATUS:PRIORITY -> jobs
--   P:count:TYPE          hash counter -> n
--   P:events              pub/sub channel of status events (JSON)
--   P:evseq               sequence number of the last event

local P = ARGV[1]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function jkey(id) return P .. ':job:' .. id end

local function ready_score(prio, id)
  return (3 - tonumber(prio)) * 17592186044416 + tonumber(id)
end

-- Moves a job from status `from` (nil for a new job) to `to`, keeping the
-- listing index and the depth counts in step.
local function set_status(id, t, prio, from, to, now)
  local depth = P .. ':depth:' .. t
  if from then
    redis.call('ZREM', P .. ':idx:' .. t .. ':' .. from, id)
    redis.call('HINCRBY', depth, from .. ':' .. prio, -1)
  end
  redis.call('ZADD', P .. ':idx:' .. t .. ':' .. to, tonumber(id), id)
  redis.call('HINCRBY', depth, to .. ':' .. prio, 1)
  redis.call('HSET', jkey(id), 'status', to, 'updated', now)
end

local function count(t, field)
  redis.call('HINCRBY', P .. ':count:' .. t, field, 1)
end

local function nilable(v)
  if v == false then return nil end
  return v
end

-- Publishes a status event. `progress` marks a progress-only report.
local function emit(id, now, progress)
  local j = redis.call('HMGET', jkey(id), 'type', 'prio', 'status', 'attempts', 'error', 'worker')
  local seq = redis.call('INCR', P .. ':evseq')
  redis.call('PUBLISH', P .. ':events', cjson.encode({
    seq = seq, id = id, type = j[1], prio = tonumber(j[2]), status = j[3],
    attempts = tonumber(j[4]), error = nilable(j[5]), worker = nilable(j[6]),
    progress = progress, at = now,
  }))
end

-- Ends a job in a final status (completed, failed or cancelled).
local function finish(id, t, prio, from, to, now)
  redis.call('ZREM', P .. ':leased', id)
  redis.call('HDEL', jkey(id), 'token', 'deadline')
  redis.call('HSET', jkey(id), 'completed', now)
  set_status(id, t, prio, from, to, now)
  redis.call('ZADD', P .. ':finals', now, id)
  if to == 'completed' then count(t, 'completed')
  elseif to == 'failed' then count(t, 'failed')
  else count(t, 'cancelled') end
  emit(id, now, false)
end

-- Moves due pending and retrying jobs to their ready sets.
local function promote(now)
  local due = redis.call('ZRANGEBYSCORE', P .. ':delayed', '-inf', now, 'LIMIT', 0, 500)
  for _, id in ipairs(due) do
    redis.call('ZREM', P .. ':delayed', id)
    local j = redis.call('HMGET', jkey(id), 'type', 'prio', 'status')
    if j[1] then
      redis.call('ZADD', P .. ':ready:' .. j[1], ready_score(j[2], id), id)
      set_status(id, j[1], j[2], j[3], 'queued', now)
      emit(id, now, false)
    end
  end
end

-- A lease ran out: the job is retried while attempts are left, else failed.
local function expire(id, now)
  redis.call('ZREM', P .. ':leased', id)
  local k = jkey(id)
  local j = redis.call('HMGET', k, 'type', 'prio', 'status', 'attempts', 'max_retries', 'cancel', 'timeout')
  if not j[1] or j[3] ~= 'processing' then return end
  local t, prio = j[1], j[2]
  count(t, 'lease_expired')
  redis.call('HSET', k, 'error', 'lease expired: no word from the worker for ' .. j[7] .. ' ms')
  if j[6] == '1' then
    finish(id, t, prio, 'processing', 'cancelled', now)
  elseif tonumber(j[4]) > tonumber(j[5]) then
    finish(id, t, prio, 'processing', 'failed', now)
  else
    redis.call('HDEL', k, 'token', 'deadline')
    redis.call('ZADD', P .. ':ready:' .. t, ready_score(prio, id), id)
    set_status(id, t, prio, 'processing', 'queued', now)
    emit(id, now, false)
  end
end

local function reap(now)
  local gone = redis.call('ZRANGEBYSCORE', P .. ':leased', '-inf', now, 'LIMIT', 0, 500)
  for _, id in ipairs(gone) do expire(id, now) end
end

-- Checks a worker's hold on a job: answers the job's fields, or an error
-- reply the adapter maps (NOTFOUND unknown job, LEASELOST stale or expired lease).
local function held(id, token, now)
  local k = jkey(id)
  local j = redis.call('HMGET', k, 'type', 'prio', 'status', 'token', 'deadline', 'attempts', 'max_retries', 'cancel', 'timeout')
  if not j[1] then return nil, 'NOTFOUND no such job' end
  if j[3] ~= 'processing' or j[4] ~= token then return nil, 'LEASELOST the lease ended' end
  if tonumber(j[5]) <= now then
    expire(id, now)
    return nil, 'LEASELOST the lease ended'
  end
  return j, nil
end
