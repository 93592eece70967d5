-- KEYS[1]: zset of entries scored by time, one member per unit of cost; KEYS[2]: a sequence.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. fmt(now - period))
local used = redis.call('ZCARD', KEYS[1])
local allowed = used + cost <= limit
local retry = 0
if allowed then
  local seq = redis.call('INCRBY', KEYS[2], cost)
  local args = {}
  for i = 1, cost do
    args[#args + 1] = fmt(now)
    args[#args + 1] = tostring(seq - cost + i)
  end
  redis.call('ZADD', KEYS[1], unpack(args))
  used = used + cost
  redis.call('PEXPIRE', KEYS[1], math.ceil(period * 1000) + 1000)
  redis.call('PEXPIRE', KEYS[2], math.ceil(period * 1000) + 1000)
elseif cost > limit then
  retry = INF
else
  local need = used + cost - limit  -- the oldest `need` entries must age out
  local e = redis.call('ZRANGE', KEYS[1], need - 1, need - 1, 'WITHSCORES')
  retry = tonumber(e[2]) + period - now
end
local reset = 0
if used > 0 then
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  reset = tonumber(last[2]) + period - now
end
return answer(allowed, math.max(0, limit - used), reset, retry)
