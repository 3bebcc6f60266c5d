
local id = ARGV[2]
local key = P .. 'delivery:' .. id
local order = redis.call('HGET', key, 'order_key')
if not order or redis.call('ZSCORE', P .. 'dead', id) then return 0 end
local now = now_ms()
redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HSET', key, 'last_error', ARGV[3])
if ARGV[4] ~= '' then
  redis.call('ZADD', P .. 'due', ms(now + tonumber(ARGV[4])), id)
  return 1
end
redis.call('ZREM', P .. 'due', id)
local list = P .. 'order:' .. order
redis.call('LREM', list, 1, id)
redis.call('ZADD', P .. 'dead', ms(now), id)
redis.call('HSET', key, 'dead_at_ms', ms(now))
local next = redis.call('LINDEX', list, 0)
if next then redis.call('ZADD', P .. 'due', 'NX', ms(now), next) end
return 2
