
local f = redis.call('HMGET', P .. 'status:' .. ARGV[2], 'status', 'event', 'payload')
if not f[1] then return {} end
if f[2] then
  local json = redis.call('GET', P .. 'event:' .. f[2])
  if not json then return {} end
  return {f[1], json, ''}
end
return {f[1], '', f[3] or ''}
