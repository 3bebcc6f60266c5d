
local stream, group, handle = P .. 'events', ARGV[2], ARGV[3]
local entry = redis.call('XRANGE', stream, handle, handle)[1]
if not entry then
  redis.call('XACK', stream, group, handle)
  return 0
end
local n, legacy = nil, ''
for i = 1, #entry[2] - 1, 2 do
  if entry[2][i] == 'ref' then n = entry[2][i + 1] end
  if entry[2][i] == 'event' then legacy = entry[2][i + 1] end
end
if not n then
  -- Stored by an older relay, the event in its stream entry: kept as the others from now on.
  n = string.format('%016d', redis.call('INCR', P .. 'event-seq'))
  redis.call('SET', P .. 'event:' .. n, legacy)
  redis.call('INCRBY', P .. 'bytes', #legacy)
  redis.call('HSET', P .. 'holds', n, '1')
end
local now = now_ms()
for i = 4, #ARGV - 4, 5 do
  local id, order = ARGV[i], ARGV[i + 3]
  local key = P .. 'delivery:' .. id
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'caller', ARGV[i + 1], 'url', ARGV[i + 2], 'order_key', order,
      'event', n, 'attempts', '0')
    if ARGV[i + 4] ~= '' then redis.call('HSET', key, 'reference', ARGV[i + 4]) end
    redis.call('HINCRBY', P .. 'holds', n, 1)
    if redis.call('RPUSH', P .. 'order:' .. order, id) == 1 then
      redis.call('ZADD', P .. 'due', ms(now), id)
    end
  end
end
redis.call('XACK', stream, group, handle)
redis.call('XDEL', stream, handle)
release(n)
return 1
