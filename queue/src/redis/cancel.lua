-- ARGV: prefix, id. Answers 'cancelled' (it was waiting), 'requested' (its
-- worker will learn through the lease) or {'final', status}; error NOTFOUND.
local now = now_ms()
local id = ARGV[2]
local k = jkey(id)
local j = redis.call('HMGET', k, 'type', 'prio', 'status')
if not j[1] then return redis.error_reply('NOTFOUND no such job') end
local t, prio, st = j[1], j[2], j[3]
if st == 'completed' or st == 'failed' or st == 'cancelled' then return {'final', st} end
if st == 'processing' then
  redis.call('HSET', k, 'cancel', 1, 'updated', now)
  return {'requested'}
end
redis.call('ZREM', P .. ':ready:' .. t, id)
redis.call('ZREM', P .. ':delayed', id)
finish(id, t, prio, st, 'cancelled', now)
return {'cancelled'}
