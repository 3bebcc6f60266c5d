
if redis.replicate_commands then redis.replicate_commands() end
local P = ARGV[1]
local function ms(n) return string.format('%d', n) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- An event gone for good: its payload, its size, its holds.
local function drop(n)
  local key = P .. 'event:' .. n
  redis.call('DECRBY', P .. 'bytes', redis.call('STRLEN', key))
  redis.call('DEL', key)
  redis.call('HDEL', P .. 'holds', n)
  redis.call('ZREM', P .. 'delivered', n)
end
-- One fewer needs event n; with none left it is delivered.
local function release(n)
  if redis.call('HINCRBY', P .. 'holds', n, -1) <= 0 then
    redis.call('HDEL', P .. 'holds', n)
    redis.call('ZADD', P .. 'delivered', ms(now_ms()), n)
  end
end
