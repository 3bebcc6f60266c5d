
local out = {}
if not record(out, ARGV[2]) then return false end
return out
