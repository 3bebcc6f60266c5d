
local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms(now_ms()), 'WITHSCORES', 'LIMIT', 0, 1)
return {redis.call('GET', P .. 'waiting') or '0', oldest[2] or false}
