
local now, limit, lease, token = now_ms(), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
-- At most this many for each caller; none for the callers after it (the worker holds its most).
local per_caller, skip = tonumber(ARGV[5]), {}
for i = 6, #ARGV do skip[ARGV[i]] = true end
-- Claims whose lease ran out are waiting again, due when they were: their old token no longer
-- holds them. (At most 1000 a call: the rest at the next.)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms(now), 'LIMIT', 0, 1000)) do
  redis.call('ZREM', KEYS[1], id)
  local key = P .. 'msg:' .. id
  local f = redis.call('HMGET', key, 'caller', 'due_at_ms', 'state')
  if f[1] and f[3] == 'claimed' then
    redis.call('HSET', key, 'state', 'accepted', 'updated_at_ms', ms(now))
    redis.call('HDEL', key, 'token', 'lease_until_ms')
    redis.call('ZADD', P .. 'due:' .. f[1], f[2], id)
    reindex(f[1])
  end
end
-- Round robin over the callers with due messages (the longest waiting first), one message each
-- per round, each caller's oldest first.
local callers = {}
for _, caller in ipairs(redis.call('ZRANGEBYSCORE', P .. 'callers', '-inf', ms(now))) do
  if #callers >= limit then break end
  if not skip[caller] then table.insert(callers, caller) end
end
local lines = {}
for i, caller in ipairs(callers) do
  lines[i] = redis.call('ZRANGEBYSCORE', P .. 'due:' .. caller, '-inf', ms(now), 'LIMIT', 0,
    math.min(limit, per_caller))
end
local out, taken, round, until_ms = {}, 0, 1, ms(now + lease)
while taken < limit do
  local more = false
  for i, caller in ipairs(callers) do
    local id = lines[i][round]
    if id and taken < limit then
      more = true
      redis.call('ZREM', P .. 'due:' .. caller, id)
      local key = P .. 'msg:' .. id
      local f = redis.call('HMGET', key, 'caller', 'account', 'body', 'reference', 'attempts',
        'valid_until_ms', 'accepted_at_ms', 'state')
      if f[1] and (f[8] == 'scheduled' or f[8] == 'accepted') then
        redis.call('HSET', key, 'state', 'claimed', 'token', token, 'lease_until_ms', until_ms,
          'updated_at_ms', ms(now))
        redis.call('ZADD', KEYS[1], until_ms, id)
        table.insert(out, id)
        for k = 1, 7 do table.insert(out, f[k]) end
        taken = taken + 1
      end
    end
  end
  if not more then break end
  round = round + 1
end
for _, caller in ipairs(callers) do reindex(caller) end
return out
