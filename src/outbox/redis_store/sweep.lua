
local now, out = now_ms(), {}
-- Sends whose worker died before recording Qikchat's answer: never sent again.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms(now), 'LIMIT', 0, 1000)) do
  local f = redis.call('HMGET', P .. 'msg:' .. id, 'caller', 'state')
  if f[1] and f[2] == 'sending' then
    ended(id, f[1], 'unknown', nil, ARGV[3], ARGV[4], now)
    record(out, id)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
-- Ended messages past the retention, with the record of their key.
local old = ms(now - tonumber(ARGV[2]))
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'ended', '-inf', old, 'LIMIT', 0, 1000)) do
  local key = P .. 'msg:' .. id
  local f = redis.call('HMGET', key, 'caller', 'key')
  if f[1] and f[2] then
    local keyed = P .. 'key:' .. f[1] .. ':' .. f[2]
    if redis.call('GET', keyed) == id then redis.call('DEL', keyed) end
  end
  redis.call('DEL', key)
  redis.call('ZREM', P .. 'ended', id)
  redis.call('ZREM', P .. 'dead', id)
end
return out
