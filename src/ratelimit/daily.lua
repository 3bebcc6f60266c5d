
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local secs = tonumber(time[1])
local day = math.floor(secs / 86400)
local now = secs * 1000 + math.floor(tonumber(time[2]) / 1000)
local reset = (day + 1) * 86400000 - now
local key = 'qikchat-relay:quota:' .. string.format('%d', day) .. ':' .. ARGV[1]
local quota = tonumber(ARGV[2])
local count = tonumber(redis.call('GET', key) or '0') or 0
if count >= quota then return {0, count, reset} end
if ARGV[4] ~= '1' then return {1, count + 1, reset} end
count = redis.call('INCR', key)
if count == 1 then redis.call('EXPIRE', key, ARGV[3]) end
return {1, count, reset}
