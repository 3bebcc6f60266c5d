
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local day = math.floor(tonumber(time[1]) / 86400)
local key = 'qikchat-relay:quota:' .. string.format('%d', day) .. ':' .. ARGV[1]
local count = tonumber(redis.call('GET', key) or '0') or 0
if count > 1 then redis.call('DECR', key) elseif count == 1 then redis.call('DEL', key) end
return 0
