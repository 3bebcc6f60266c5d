
local now = now_ms()
local f = redis.call('HMGET', KEYS[1], 'state', 'token', 'lease_until_ms')
if not holds(f, ARGV[3], now) then return 0 end
local until_ms = ms(now + tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 'lease_until_ms', until_ms)
redis.call('ZADD', P .. (f[1] == 'sending' and 'sending' or 'leases'), until_ms, ARGV[2])
return 1
