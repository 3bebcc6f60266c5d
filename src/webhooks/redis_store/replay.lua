
local id = ARGV[2]
if not redis.call('ZSCORE', P .. 'dead', id) then return 0 end
redis.call('ZREM', P .. 'dead', id)
local key = P .. 'delivery:' .. id
local order = redis.call('HGET', key, 'order_key')
if not order then return 0 end
redis.call('HSET', key, 'attempts', '0')
redis.call('HDEL', key, 'dead_at_ms')
if redis.call('RPUSH', P .. 'order:' .. order, id) == 1 then
  redis.call('ZADD', P .. 'due', ms(now_ms()), id)
end
return 1
