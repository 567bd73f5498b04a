-- ARGV: prefix, retention in ms. Moves due jobs, expires leases and drops
-- final jobs older than the retention. Answers how many were dropped.
local now = now_ms()
promote(now)
reap(now)
local old = redis.call('ZRANGEBYSCORE', P .. ':finals', '-inf', now - tonumber(ARGV[2]), 'LIMIT', 0, 500)
for _, id in ipairs(old) do
  local k = jkey(id)
  local j = redis.call('HMGET', k, 'type', 'prio', 'status', 'owner')
  if j[1] then
    redis.call('ZREM', P .. ':idx:' .. j[1] .. ':' .. j[3], id)
    if j[4] then redis.call('ZREM', P .. ':owner:' .. j[4], id) end
    redis.call('HINCRBY', P .. ':depth:' .. j[1], j[3] .. ':' .. j[2], -1)
    redis.call('DEL', k)
  end
  redis.call('ZREM', P .. ':finals', id)
end
return #old
