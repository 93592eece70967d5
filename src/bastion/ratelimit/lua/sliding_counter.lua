-- KEYS[1]: hash {w, p, c}: window number, previous and current counts.
local window = math.floor(now / period)
local w = num(redis.call('HGET', KEYS[1], 'w'), nil)
local prev, cur = 0, 0
if w == window then
  prev = num(redis.call('HGET', KEYS[1], 'p'), 0)
  cur = num(redis.call('HGET', KEYS[1], 'c'), 0)
elseif w == window - 1 then
  prev = num(redis.call('HGET', KEYS[1], 'c'), 0)
end
local weight = 1.0 - ((now / period) % 1.0)
local weighted = prev * weight + cur
local allowed = math.floor(weighted) + cost <= limit
if allowed then
  cur = cur + cost
  weighted = weighted + cost
end
redis.call('HSET', KEYS[1], 'w', window, 'p', fmt(prev), 'c', fmt(cur))
redis.call('PEXPIRE', KEYS[1], math.ceil(2 * period * 1000) + 1000)
local reset = 0
if cur > 0 then reset = (window + 2) * period - now elseif prev > 0 then reset = (window + 1) * period - now end
local retry = 0
if not allowed then
  if cost > limit then
    retry = INF
  else
    local room = limit - cost + 1
    if cur < room then
      if prev > 0 then
        local need = (room - cur) / prev
        if need < weight then retry = (weight - need) * period + 0.000001 end
      end
    else
      retry = (window + 1) * period - now + (1.0 - room / cur) * period + 0.000001
    end
  end
end
return answer(allowed, math.max(0, limit - math.floor(weighted)), reset, retry)
