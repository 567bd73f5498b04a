-- ARGV: prefix, then 9 fields per job: type, payload, priority (0-3),
-- max_retries, timeout_ms, correlation_id ('' none), callback_context
-- ('' none), run_at_ms ('' now), owner ('' none). Answers the new ids in
-- order. An owner's jobs are indexed in P:owner:NAME (score: id).
local now = now_ms()
local ids = {}
local fields = 9
for i = 2, #ARGV, fields do
  local t, prio, run_at = ARGV[i], ARGV[i + 2], tonumber(ARGV[i + 7])
  local id = tostring(redis.call('INCR', P .. ':seq'))
  local k = jkey(id)
  redis.call('HSET', k, 'type', t, 'payload', ARGV[i + 1], 'prio', prio,
    'max_retries', ARGV[i + 3], 'timeout', ARGV[i + 4], 'created', now, 'attempts', 0)
  if ARGV[i + 5] ~= '' then redis.call('HSET', k, 'correlation', ARGV[i + 5]) end
  if ARGV[i + 6] ~= '' then redis.call('HSET', k, 'context', ARGV[i + 6]) end
  if ARGV[i + 8] ~= '' then
    redis.call('HSET', k, 'owner', ARGV[i + 8])
    redis.call('ZADD', P .. ':owner:' .. ARGV[i + 8], tonumber(id), id)
  end
  redis.call('SADD', P .. ':types', t)
  if run_at and run_at > now then
    redis.call('ZADD', P .. ':delayed', run_at, id)
    set_status(id, t, prio, nil, 'pending', now)
  else
    redis.call('ZADD', P .. ':ready:' .. t, ready_score(prio, id), id)
    set_status(id, t, prio, nil, 'queued', now)
  end
  count(t, 'published')
  emit(id, now, false)
  ids[#ids + 1] = id
end
return ids
