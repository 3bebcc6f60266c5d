
local out = {}
local ids = redis.call('ZREVRANGE', P .. 'dead', 0, tonumber(ARGV[2]) - 1, 'WITHSCORES')
for i = 1, #ids - 1, 2 do
  local id = ids[i]
  local f = redis.call('HMGET', P .. 'delivery:' .. id, 'caller', 'url', 'attempts', 'last_error', 'body', 'event', 'reference')
  if f[1] then
    table.insert(out, id)
    for k = 1, 4 do table.insert(out, f[k] or '') end
    table.insert(out, ids[i + 1])
    table.insert(out, f[5] or '')
    table.insert(out, f[6] and redis.call('GET', P .. 'event:' .. f[6]) or '')
    table.insert(out, f[7] or '')
  end
end
return out
