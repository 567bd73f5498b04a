-- ARGV: prefix, id, token, error, retry delay in ms (-1: fail for good).
-- Answers the status the job went to: retrying, failed or cancelled.
local now = now_ms()
local id = ARGV[2]
local j, err = held(id, ARGV[3], now)
if err then return redis.error_reply(err) end
local t, prio, delay = j[1], j[2], tonumber(ARGV[5])
redis.call('HSET', jkey(id), 'error', ARGV[4])
if j[8] == '1' then
  finish(id, t, prio, 'processing', 'cancelled', now)
  return 'cancelled'
end
if delay < 0 or tonumber(j[6]) > tonumber(j[7]) then
  finish(id, t, prio, 'processing', 'failed', now)
  return 'failed'
end
redis.call('ZREM', P .. ':leased', id)
redis.call('HDEL', jkey(id), 'token', 'deadline')
redis.call('ZADD', P .. ':delayed', now + delay, id)
set_status(id, t, prio, 'processing', 'retrying', now)
count(t, 'retried')
emit(id, now, false)
return 'retrying'
