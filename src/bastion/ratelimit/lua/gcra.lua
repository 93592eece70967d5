-- KEYS[1]: string, the theoretical arrival time (TAT)
local interval = period / limit
local tat = num(redis.call('GET', KEYS[1]), now)
tat = math.max(tat, now)
local new_tat = tat + interval * cost
local allow_at = new_tat - capacity * interval
local allowed = now >= allow_at - 0.000000001
local retry = 0
if allowed then
  tat = new_tat
  redis.call('SET', KEYS[1], fmt(tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
elseif cost <= capacity then
  retry = allow_at - now
else
  retry = INF
end
local remaining = math.max(0, math.floor((now - (tat - capacity * interval)) / interval + 0.000000001))
return answer(allowed, math.min(capacity, remaining), math.max(0, tat - now), retry)
