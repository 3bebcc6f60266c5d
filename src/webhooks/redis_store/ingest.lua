
local seen = P .. 'seen:' .. ARGV[2]
if not redis.call('SET', seen, '1', 'NX', 'EX', ARGV[4]) then return {0, 0} end
local json, max = ARGV[3], tonumber(ARGV[5])
local delivered, dropped = P .. 'delivered', 0
local old = now_ms() - tonumber(ARGV[4]) * 1000
for _, n in ipairs(redis.call('ZRANGEBYSCORE', delivered, '-inf', ms(old), 'LIMIT', 0, 100)) do
  drop(n)
end
local function used() return tonumber(redis.call('GET', P .. 'bytes') or '0') end
if used() + #json > max then
  local target = math.floor(max * tonumber(ARGV[6]))
  while used() + #json > target do
    local oldest = redis.call('ZRANGE', delivered, 0, 99)
    if #oldest == 0 then break end
    for _, n in ipairs(oldest) do
      drop(n)
      dropped = dropped + 1
      if used() + #json <= target then break end
    end
  end
  if used() + #json > max then
    redis.call('DEL', seen)
    return {2, dropped}
  end
end
local n = string.format('%016d', redis.call('INCR', P .. 'event-seq'))
redis.call('SET', P .. 'event:' .. n, json)
redis.call('INCRBY', P .. 'bytes', #json)
redis.call('HSET', P .. 'holds', n, '1')
redis.call('XADD', P .. 'events', '*', 'ref', n)
if ARGV[7] then
  local key = P .. 'status:' .. ARGV[7]
  local stored = tonumber(redis.call('HGET', key, 'rank') or '-1') or -1
  if tonumber(ARGV[9]) >= stored then
    redis.call('HSET', key, 'rank', ARGV[9], 'status', ARGV[8], 'event', n)
    redis.call('HDEL', key, 'payload')
  end
  redis.call('EXPIRE', key, ARGV[4])
end
return {1, dropped}
