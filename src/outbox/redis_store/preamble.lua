if redis.replicate_commands then redis.replicate_commands() end
local P = ARGV[1]
local function ms(n) return string.format('%d', n) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- A record's fields after its id, in the order mod.rs reads them (`RECORD_LEN`).
local FIELDS = {'caller', 'account', 'state', 'qikchat_id', 'reference', 'send_at_ms', 'due_at_ms',
  'valid_until_ms', 'attempts', 'error_code', 'error_detail', 'accepted_at_ms', 'updated_at_ms'}
-- Message id's record appended to out (absent fields as nil replies); false if there is none.
local function record(out, id)
  local f = redis.call('HMGET', P .. 'msg:' .. id, unpack(FIELDS))
  if not f[1] then return false end
  table.insert(out, id)
  for k = 1, #FIELDS do table.insert(out, f[k]) end
  return true
end
-- The caller's place in `callers`: the due time of its oldest waiting message, or none.
local function reindex(caller)
  local first = redis.call('ZRANGE', P .. 'due:' .. caller, 0, 0, 'WITHSCORES')
  if first[1] then
    redis.call('ZADD', P .. 'callers', first[2], caller)
  else
    redis.call('ZREM', P .. 'callers', caller)
  end
end
-- Whether token holds message f (fields state, token, lease_until_ms) at now: a claim within its
-- lease, or a send (until the sweep ends it: the answer Qikchat gave must still be recorded).
local function holds(f, token, now)
  if f[2] ~= token then return false end
  if f[1] == 'sending' then return true end
  return f[1] == 'claimed' and now < tonumber(f[3] or '0')
end
-- A waiting message ends as state: out of every set that hands it out, its body (the customer's
-- number) and lease forgotten, in `ended` for the sweep and, failed or unknown, in `dead`. code is
-- nil to leave the last error as it is, false to clear it.
local function ended(id, caller, state, qikchat_id, code, detail, now)
  local key = P .. 'msg:' .. id
  redis.call('HSET', key, 'state', state, 'updated_at_ms', ms(now))
  if qikchat_id then redis.call('HSET', key, 'qikchat_id', qikchat_id) end
  if code then
    redis.call('HSET', key, 'error_code', code, 'error_detail', detail)
  elseif code == false then
    redis.call('HDEL', key, 'error_code', 'error_detail')
  end
  redis.call('HDEL', key, 'body', 'token', 'lease_until_ms')
  redis.call('ZREM', P .. 'due:' .. caller, id)
  redis.call('ZREM', P .. 'leases', id)
  redis.call('ZREM', P .. 'sending', id)
  reindex(caller)
  if redis.call('DECR', P .. 'waiting') < 0 then redis.call('SET', P .. 'waiting', '0') end
  redis.call('ZADD', P .. 'ended', ms(now), id)
  if state == 'failed' or state == 'unknown' then redis.call('ZADD', P .. 'dead', ms(now), id) end
end
