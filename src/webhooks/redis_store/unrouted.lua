
local stream, group, consumer, lease, limit = P .. 'events', ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local out, count = {}, 0
local function take(entries)
  for _, entry in ipairs(entries or {}) do
    -- An entry deleted while pending comes back as nil before Redis 7: skip it.
    if type(entry) == 'table' and count < limit then
      local json, fields = '', entry[2]
      if type(fields) == 'table' then
        for i = 1, #fields - 1, 2 do
          if fields[i] == 'event' then json = fields[i + 1] end
          if fields[i] == 'ref' then json = redis.call('GET', P .. 'event:' .. fields[i + 1]) or '' end
        end
      end
      table.insert(out, entry[1])
      table.insert(out, json)
      count = count + 1
    end
  end
end
local function autoclaim(cursor)
  return redis.pcall('XAUTOCLAIM', stream, group, consumer, lease, cursor, 'COUNT', limit - count)
end
local claimed = autoclaim('0-0')
if claimed.err then
  if not string.find(claimed.err, 'NOGROUP', 1, true) then return claimed end
  redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
  claimed = autoclaim('0-0')
  if claimed.err then return claimed end
end
-- XAUTOCLAIM looks at COUNT * 10 pending entries per call: go on through the pending list
-- (bounded, so one call never takes long) while there may be more to claim.
local rounds = 1
while true do
  take(claimed[2])
  if claimed[1] == '0-0' or count >= limit or rounds >= 10 then break end
  claimed = redis.call('XAUTOCLAIM', stream, group, consumer, lease, claimed[1], 'COUNT', limit - count)
  rounds = rounds + 1
end
if count < limit then
  local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', limit - count, 'STREAMS', stream, '>')
  if read then take(read[1][2]) end
end
return out
