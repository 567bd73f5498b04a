-- ARGV: prefix, id, token, progress (JSON, '' for none). Extends the lease
-- by the job's timeout. Answers {cancel requested (0/1), new deadline}.
local now = now_ms()
local id = ARGV[2]
local j, err = held(id, ARGV[3], now)
if err then return redis.error_reply(err) end
local deadline = now + tonumber(j[9])
redis.call('HSET', jkey(id), 'deadline', deadline)
redis.call('ZADD', P .. ':leased', deadline, id)
if ARGV[4] ~= '' then
  redis.call('HSET', jkey(id), 'progress', ARGV[4], 'updated', now)
  emit(id, now, true)
end
local cancel = 0
if j[8] == '1' then cancel = 1 end
return {cancel, deadline}
