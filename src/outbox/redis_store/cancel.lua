
local id = ARGV[2]
local f = redis.call('HMGET', KEYS[1], 'caller', 'state')
if f[1] ~= ARGV[3] then return {'not_found'} end
local out = {'not_cancelable'}
if f[2] == 'scheduled' or f[2] == 'accepted' or f[2] == 'claimed' then
  ended(id, f[1], 'canceled', nil, nil, nil, now_ms())
  out[1] = 'canceled'
end
record(out, id)
return out
