
local W = 12
local max, n = tonumber(ARGV[2]), (#ARGV - 2) / W
-- What each item becomes, decided before anything is written: {'stored'|'existing'|'reused', id,
-- state}. `batch` holds the keys of this batch's items to be stored, for a later item with one.
local out, batch, new = {}, {}, 0
for i = 0, n - 1 do
  local b = 2 + i * W
  local id, caller, sha, fingerprint, state = ARGV[b + 1], ARGV[b + 2], ARGV[b + 6], ARGV[b + 7], ARGV[b + 8]
  local kind, at, as = 'stored', id, state
  if sha ~= '' then
    local keyed = P .. 'key:' .. caller .. ':' .. sha
    local earlier = batch[keyed]
    if earlier then
      kind, at, as = (earlier.fingerprint == fingerprint) and 'existing' or 'reused', earlier.id, earlier.state
    else
      local stored = redis.call('GET', keyed)
      local f = stored and redis.call('HMGET', P .. 'msg:' .. stored, 'state', 'fingerprint')
      if f and f[1] then
        kind, at, as = (f[2] == fingerprint) and 'existing' or 'reused', stored, f[1]
      else
        batch[keyed] = {id = id, state = state, fingerprint = fingerprint}
      end
    end
  end
  if kind == 'stored' then new = new + 1 end
  if kind == 'reused' then at, as = '', '' end
  table.insert(out, kind)
  table.insert(out, at)
  table.insert(out, as)
end
if new > 0 and tonumber(redis.call('GET', KEYS[1]) or '0') + new > max then return false end
local now = ms(now_ms())
for i = 0, n - 1 do
  if out[i * 3 + 1] == 'stored' then
    local b = 2 + i * W
    local id, caller, sha = ARGV[b + 1], ARGV[b + 2], ARGV[b + 6]
    local key = P .. 'msg:' .. id
    redis.call('HSET', key, 'caller', caller, 'account', ARGV[b + 3], 'body', ARGV[b + 4],
      'state', ARGV[b + 8], 'due_at_ms', ARGV[b + 10], 'valid_until_ms', ARGV[b + 11],
      'attempts', '0', 'accepted_at_ms', ARGV[b + 12], 'updated_at_ms', now)
    if ARGV[b + 5] ~= '' then redis.call('HSET', key, 'reference', ARGV[b + 5]) end
    if ARGV[b + 9] ~= '' then redis.call('HSET', key, 'send_at_ms', ARGV[b + 9]) end
    if sha ~= '' then
      redis.call('HSET', key, 'key', sha, 'fingerprint', ARGV[b + 7])
      redis.call('SET', P .. 'key:' .. caller .. ':' .. sha, id)
    end
    redis.call('ZADD', P .. 'due:' .. caller, ARGV[b + 10], id)
    reindex(caller)
  end
end
redis.call('INCRBY', KEYS[1], new)
return out
