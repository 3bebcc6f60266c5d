
-- A change of customer ARGV[3] (a pseudonym; ARGV[4] masked) on account ARGV[2]'s opt-out list:
-- opted out or not (ARGV[5], '1' or '0'), how (ARGV[6]), at ARGV[7] (ms). Applied unless a later
-- change is in force or it changes nothing; a customer taken off keeps an entry with its date, so
-- an older STOP routed late cannot put them back. Returns {masked, how, at} while opted out, else {}.
local key = P .. 'opt-outs:' .. ARGV[2]
local customer = ARGV[3]
local stored = redis.call('HGET', key, customer)
local state = stored and cjson.decode(stored)
local opted_out = ARGV[5] == '1'
if not state or (tonumber(ARGV[7]) >= tonumber(state.at) and opted_out ~= state.opted_out) then
  state = {masked = ARGV[4], opted_out = opted_out, how = ARGV[6], at = ARGV[7]}
  redis.call('HSET', key, customer, cjson.encode(state))
end
if state.opted_out then
  return {state.masked, state.how, state.at}
end
return {}
