
local id = redis.call('GET', KEYS[1])
if not id then return false end
local out = {}
if not record(out, id) then return false end
table.insert(out, redis.call('HGET', P .. 'msg:' .. id, 'fingerprint'))
return out
