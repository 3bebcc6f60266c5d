
for i = 3, #ARGV do
  for _, entry in ipairs(redis.call('XRANGE', P .. 'events', ARGV[i], ARGV[i])) do
    local fields = entry[2]
    for k = 1, #fields - 1, 2 do
      if fields[k] == 'ref' then drop(fields[k + 1]) end
    end
  end
  redis.call('XACK', P .. 'events', ARGV[2], ARGV[i])
  redis.call('XDEL', P .. 'events', ARGV[i])
end
return 0
