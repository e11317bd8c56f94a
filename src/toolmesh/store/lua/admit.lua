-- Admit one request against every limit that applies to it, all or nothing, on Redis's clock.
--
-- KEYS[i]  one key per limit (all hash-tagged with the same {tenant}: one Cluster slot)
-- ARGV[1]  the request id (member of sliding windows and concurrency sets)
-- ARGV[1+4i-3 .. 1+4i]  kind, a, b, n of limit i:
--   "b"  token bucket:   a = refill rate (tokens/s), b = capacity, n = tokens to take; a hash {tk, ts}
--   "w"  sliding window: a = max admissions, b = window (s); a sorted set of admission times
--   "c"  concurrency:    a = max slots, b = lease (s); a sorted set of slot expiry times
--   (n is 1 for windows and slots: one admission each)
-- Returns {1} when admitted (every limit charged), else {0, retry_after_ms, i} for the first
-- limit that refused (retry_after_ms = -1 when unknown: a concurrency slot frees on release).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local member = ARGV[1]
local n = #KEYS
local tokens = {}

for i = 1, n do
  local kind = ARGV[4 * i - 2]
  local a = tonumber(ARGV[4 * i - 1])
  local b = tonumber(ARGV[4 * i])
  local cost = tonumber(ARGV[4 * i + 1])
  local key = KEYS[i]
  if kind == 'b' then
    local st = redis.call('HMGET', key, 'tk', 'ts')
    local tk = tonumber(st[1])
    local ts = tonumber(st[2])
    if tk == nil or ts == nil then
      tk = b
    elseif now > ts then
      tk = math.min(b, tk + (now - ts) * a)
    end
    if tk < cost then
      return {0, math.ceil((cost - tk) / a * 1000), i}
    end
    tokens[i] = tk
  elseif kind == 'w' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.6f', now - b))
    if redis.call('ZCARD', key) >= a then
      local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      return {0, math.max(1, math.ceil((tonumber(oldest[2]) + b - now) * 1000)), i}
    end
  elseif kind == 'c' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.6f', now))
    if redis.call('ZCARD', key) >= a then
      return {0, -1, i}
    end
  else
    return redis.error_reply('unknown limit kind ' .. tostring(kind))
  end
end

-- Every limit has room: charge them all.
for i = 1, n do
  local kind = ARGV[4 * i - 2]
  local a = tonumber(ARGV[4 * i - 1])
  local b = tonumber(ARGV[4 * i])
  local key = KEYS[i]
  if kind == 'b' then
    local left = tokens[i] - tonumber(ARGV[4 * i + 1])
    redis.call('HSET', key, 'tk', string.format('%.17g', left), 'ts', string.format('%.6f', now))
    -- Once full again the bucket is the same as a missing one: let it go.
    redis.call('PEXPIRE', key, math.ceil((b - left) / a * 1000) + 1000)
  elseif kind == 'w' then
    redis.call('ZADD', key, string.format('%.6f', now), member)
    redis.call('PEXPIRE', key, math.ceil(b * 1000) + 1000)
  else
    redis.call('ZADD', key, string.format('%.6f', now + b), member)
    redis.call('PEXPIRE', key, math.ceil(b * 1000) + 1000)
  end
end
return {1}
