-- ARGV: prefix, id, token, result (JSON). Answers 'completed', or
-- 'cancelled' when a cancel was requested meanwhile; errors NOTFOUND, LEASELOST.
local now = now_ms()
local id = ARGV[2]
local j, err = held(id, ARGV[3], now)
if err then return redis.error_reply(err) end
if j[8] == '1' then
  finish(id, j[1], j[2], 'processing', 'cancelled', now)
  return 'cancelled'
end
redis.call('HSET', jkey(id), 'result', ARGV[4])
redis.call('HDEL', jkey(id), 'error')
finish(id, j[1], j[2], 'processing', 'completed', now)
return 'completed'
