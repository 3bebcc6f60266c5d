
local now = now_ms()
local f = redis.call('HMGET', KEYS[1], 'state', 'token', 'lease_until_ms')
if f[1] ~= 'claimed' or not holds(f, ARGV[3], now) then return 0 end
local until_ms = ms(now + tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 'state', 'sending', 'lease_until_ms', until_ms, 'updated_at_ms', ms(now))
redis.call('ZREM', P .. 'leases', ARGV[2])
redis.call('ZADD', P .. 'sending', until_ms, ARGV[2])
return 1
