
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local out, writes, all = {}, {}, ARGV[1] == '1'
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i])
  local burst = tonumber(ARGV[2 * i + 1])
  local tat = now
  local stored = redis.call('GET', key)
  if stored then tat = math.max(tonumber(stored) or now, now) end
  local tolerance = (burst - 1) * interval
  local ahead = tat - now
  if ahead > tolerance then
    all = false
    for _, v in ipairs({0, 0, ahead, ahead - tolerance}) do table.insert(out, v) end
  else
    local new_tat = tat + interval
    table.insert(writes, {key, new_tat})
    for _, v in ipairs({1, math.floor((tolerance - ahead) / interval), new_tat - now, 0}) do
      table.insert(out, v)
    end
  end
end
if all then
  for _, w in ipairs(writes) do
    redis.call('SET', w[1], string.format('%d', w[2]), 'PX', string.format('%d', w[2] - now))
  end
end
return out
