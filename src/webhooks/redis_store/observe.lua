
-- An event of account ARGV[2] received at ARGV[3] (ms): the account is watched since its first
-- event; with a customer (ARGV[4], a pseudonym), they last wrote then, kept for ARGV[5] ms.
local account, at = ARGV[2], tonumber(ARGV[3])
local watched = P .. 'watched:' .. account
local since = tonumber(redis.call('GET', watched) or '')
if not since or at < since then
  redis.call('SET', watched, ms(at))
end
local customer = ARGV[4]
if customer == '' then
  return 0
end
local window = P .. 'window:' .. account .. ':' .. customer
local last = tonumber(redis.call('GET', window) or '')
if not last or at > last then
  redis.call('SET', window, ms(at), 'PX', ARGV[5])
end
return 1
