
local due, now = P .. 'due', now_ms()
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', ms(now), 'LIMIT', 0, ARGV[2])) do
  local f = redis.call('HMGET', P .. 'delivery:' .. id, 'caller', 'url', 'order_key', 'body', 'attempts', 'event', 'reference')
  if f[1] then
    redis.call('ZADD', due, ms(now + tonumber(ARGV[3])), id)
    table.insert(out, id)
    for k = 1, 5 do table.insert(out, f[k] or '') end
    table.insert(out, f[6] and redis.call('GET', P .. 'event:' .. f[6]) or '')
    table.insert(out, f[7] or '')
  else
    redis.call('ZREM', due, id)
  end
end
return out
