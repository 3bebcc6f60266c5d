
local id = ARGV[2]
local key = P .. 'delivery:' .. id
local order = redis.call('HGET', key, 'order_key')
redis.call('ZREM', P .. 'due', id)
if not order then return 0 end
-- A worker whose lease ran out may deliver after another made it a dead letter: delivered wins.
redis.call('ZREM', P .. 'dead', id)
local list = P .. 'order:' .. order
redis.call('LREM', list, 1, id)
local n = redis.call('HGET', key, 'event')
redis.call('DEL', key)
if n then release(n) end
local next = redis.call('LINDEX', list, 0)
if next then redis.call('ZADD', P .. 'due', 'NX', ms(now_ms()), next) end
return 1
