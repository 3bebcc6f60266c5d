
local now = now_ms()
local f = redis.call('HMGET', KEYS[1], 'state', 'token', 'lease_until_ms', 'caller')
if not f[4] or not holds(f, ARGV[3], now) then return 0 end
local qikchat_id = ARGV[5] ~= '' and ARGV[5]
local code = ARGV[6] ~= '' and ARGV[6]
ended(ARGV[2], f[4], ARGV[4], qikchat_id, code, ARGV[7], now)
return 1
