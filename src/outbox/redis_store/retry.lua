
local now, id = now_ms(), ARGV[2]
local f = redis.call('HMGET', KEYS[1], 'state', 'token', 'lease_until_ms', 'caller')
if not f[4] or not holds(f, ARGV[3], now) then return 0 end
redis.call('HSET', KEYS[1], 'state', 'accepted', 'due_at_ms', ARGV[4], 'error_code', ARGV[5],
  'error_detail', ARGV[6], 'updated_at_ms', ms(now))
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HDEL', KEYS[1], 'token', 'lease_until_ms')
redis.call('ZREM', P .. 'leases', id)
redis.call('ZREM', P .. 'sending', id)
redis.call('ZADD', P .. 'due:' .. f[4], ARGV[4], id)
reindex(f[4])
return 1
