-- ARGV: prefix, worker id, lease token, then the job types to take from,
-- in the order to try them. Moves due jobs and expired leases first.
-- Answers {id, type, payload, priority, max_retries, timeout_ms,
-- correlation, context, created, attempts, deadline, owner}, or {'', wait_ms}
-- when nothing is ready (wait_ms: until the next delayed job or lease
-- deadline, -1 when there is none).
local now = now_ms()
promote(now)
reap(now)
local worker, token = ARGV[2], ARGV[3]
for i = 4, #ARGV do
  local t = ARGV[i]
  local id = redis.call('ZRANGE', P .. ':ready:' .. t, 0, 0)[1]
  local k, j = nil, {}
  while id do
    redis.call('ZREM', P .. ':ready:' .. t, id)
    k = jkey(id)
    j = redis.call('HMGET', k, 'type', 'payload', 'prio', 'max_retries', 'timeout',
      'correlation', 'context', 'created', 'status', 'owner')
    if j[1] then break end
    -- An id whose job is gone (deleted by hand): drop it, try the next.
    id = redis.call('ZRANGE', P .. ':ready:' .. t, 0, 0)[1]
  end
  if id then
    local attempts = redis.call('HINCRBY', k, 'attempts', 1)
    local deadline = now + tonumber(j[5])
    redis.call('HSET', k, 'worker', worker, 'token', token, 'deadline', deadline, 'started', now)
    redis.call('HDEL', k, 'progress')
    redis.call('ZADD', P .. ':leased', deadline, id)
    set_status(id, t, j[3], j[9], 'processing', now)
    count(t, 'started')
    emit(id, now, false)
    return {id, j[1], j[2], j[3], j[4], j[5], j[6] or '', j[7] or '', j[8],
      tostring(attempts), string.format('%d', deadline), j[10] or ''}
  end
end
local wait = -1
for _, key in ipairs({P .. ':delayed', P .. ':leased'}) do
  local next = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if next[2] then
    local w = math.max(0, tonumber(next[2]) - now)
    if wait < 0 or w < wait then wait = w end
  end
end
return {'', string.format('%d', wait)}
