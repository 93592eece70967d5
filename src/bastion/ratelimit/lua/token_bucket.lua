-- KEYS[1]: hash {tokens, ts}
local per_sec = limit / period
local tokens = num(redis.call('HGET', KEYS[1], 'tokens'), nil)
if tokens == nil then
  tokens = capacity
else
  local last = num(redis.call('HGET', KEYS[1], 'ts'), now)
  tokens = math.min(capacity, tokens + math.max(0, now - last) * per_sec)
end
local allowed = tokens >= cost
local retry = 0
if allowed then
  tokens = tokens - cost
elseif cost <= capacity then
  retry = (cost - tokens) / per_sec
else
  retry = INF
end
redis.call('HSET', KEYS[1], 'tokens', fmt(tokens), 'ts', fmt(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(math.max(period, capacity / per_sec) * 1000) + 1000)
return answer(allowed, tokens, (capacity - tokens) / per_sec, retry)
