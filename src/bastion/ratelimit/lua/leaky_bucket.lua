-- KEYS[1]: hash {level, ts}. A meter when max_delay is 0, otherwise a shaper.
local per_sec = limit / period
local level = num(redis.call('HGET', KEYS[1], 'level'), nil)
if level == nil then
  level = 0
else
  local last = num(redis.call('HGET', KEYS[1], 'ts'), now)
  level = math.max(0, level - math.max(0, now - last) * per_sec)
end
local allowed, retry, delay = false, 0, 0
if max_delay <= 0 then
  allowed = level + cost <= capacity
  if allowed then level = level + cost
  elseif cost <= capacity then retry = (level + cost - capacity) / per_sec
  else retry = INF end
else
  delay = level / per_sec
  allowed = level + cost <= capacity and delay <= max_delay
  if allowed then
    level = level + cost
  elseif cost > capacity then
    retry = INF
  else
    retry = math.max((level + cost - capacity) / per_sec, delay - max_delay, 0)
  end
  if not allowed then delay = 0 end
end
redis.call('HSET', KEYS[1], 'level', fmt(level), 'ts', fmt(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(math.max(period, capacity / per_sec) * 1000) + 1000)
return answer(allowed, math.max(0, capacity - level), level / per_sec, retry, delay)
