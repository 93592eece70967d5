-- Shared prelude (prepended to every script). ARGV: limit, period, capacity, cost, now, max_delay
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local capacity = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local now
if ARGV[5] ~= nil and ARGV[5] ~= '' then
  now = tonumber(ARGV[5])
else
  local t = redis.call('TIME')  -- the server's clock: every gateway agrees, whatever its own
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local max_delay = tonumber(ARGV[6]) or 0
local INF = -1
local function us(seconds)
  if seconds == INF then return -1 end
  return math.floor(seconds * 1000000 + 0.5)
end
local function num(v, default)
  if v == false or v == nil then return default end
  return tonumber(v)
end
local function fmt(x) return string.format('%.17g', x) end
local function answer(allowed, remaining, reset, retry, delay)
  return {allowed and 1 or 0, math.floor(remaining), us(reset), us(retry), us(delay or 0)}
end
