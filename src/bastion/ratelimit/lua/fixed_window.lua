-- KEYS[1]: hash {start, count}. The window starts at the first hit after the last one ended.
local start = num(redis.call('HGET', KEYS[1], 'start'), nil)
local count = num(redis.call('HGET', KEYS[1], 'count'), 0)
if start == nil or now >= start + period then
  start = now
  count = 0
end
local allowed = count + cost <= limit
if allowed then
  count = count + cost
  redis.call('HSET', KEYS[1], 'start', fmt(start), 'count', fmt(count))
  redis.call('PEXPIRE', KEYS[1], math.ceil((start + period - now) * 1000) + 1000)
end
local reset = start + period - now
local retry = 0
if not allowed then
  if cost <= limit then retry = reset else retry = INF end
end
return answer(allowed, math.max(0, limit - count), reset, retry)
