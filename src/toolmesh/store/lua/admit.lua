-- Admit one request against every limit that applies to it, all or nothing, on Redis's clock,
-- and (optionally) hold its estimated spend on its daily spend scopes in the same step.
-- (spend_lib.lua and bucket_lib.lua are prepended when loaded: spend_purge, spend_stats,
-- spend_refuses, spend_hold; bucket_level.)
--
-- KEYS[1 .. nl]  one key per limit; then two per spend scope (its hash and its lease set).
--   All are hash-tagged with the same {tenant}: one Cluster slot.
-- ARGV[1]  the request id (member of sliding windows and concurrency sets)
-- ARGV[2]  nl, the number of limits
-- ARGV[4i-1 .. 4i+2]  kind, a, b, n of limit i:
--   "b"  token bucket:   a = refill rate (tokens/s), b = capacity, n = tokens to take; a hash {tk, ts}
--   "w"  sliding window: a = max admissions, b = window (s); a sorted set of admission times
--   "c"  concurrency:    a = max slots, b = lease (s); a sorted set of slot expiry times
--   (n is 1 for windows and slots: one admission each)
-- Then, when spend scopes are given (s0 = 4nl + 3): ARGV[s0] the hold's id, ARGV[s0+1] its lease (s),
--   ARGV[s0+2] the keys' TTL (ms), and per scope j: limit, amount, floor (as spend.lua's "hold").
-- Returns {1} when admitted (every limit charged, every hold taken), else {0, retry_after_ms, i}
-- for the first limit that refused (retry_after_ms = -1 when unknown: a concurrency slot frees on
-- release; -2 for a spend scope: i = nl + j). With spend scopes every reply is padded to three
-- values and followed by used, reserved, in flight of each scope (after the decision).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local member = ARGV[1]
local nl = tonumber(ARGV[2])
local ns = (#KEYS - nl) / 2
local s0 = 4 * nl + 3
local tokens = {}

local function reply(out)
  if ns == 0 then return out end
  while #out < 3 do out[#out + 1] = 0 end
  return spend_stats(out, nl + 1, ns)
end

for j = 1, ns do
  spend_purge(KEYS[nl + 2 * j - 1], KEYS[nl + 2 * j], now)
end

for i = 1, nl do
  local kind = ARGV[4 * i - 1]
  local a = tonumber(ARGV[4 * i])
  local b = tonumber(ARGV[4 * i + 1])
  local cost = tonumber(ARGV[4 * i + 2])
  local key = KEYS[i]
  if kind == 'b' then
    local tk = bucket_level(key, a, b, now)
    if tk < cost then
      return reply({0, math.ceil((cost - tk) / a * 1000), i})
    end
    tokens[i] = tk
  elseif kind == 'w' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.6f', now - b))
    if redis.call('ZCARD', key) >= a then
      local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      return reply({0, math.max(1, math.ceil((tonumber(oldest[2]) + b - now) * 1000)), i})
    end
  elseif kind == 'c' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.6f', now))
    if redis.call('ZCARD', key) >= a then
      return reply({0, -1, i})
    end
  else
    return redis.error_reply('unknown limit kind ' .. tostring(kind))
  end
end

local hold_id = ARGV[s0]
-- An id held already (a retried script) is not held twice.
local fresh = ns > 0 and not redis.call('HGET', KEYS[nl + 1], 'r:' .. hold_id)
if fresh then
  for j = 1, ns do
    local base = s0 + 3 + 3 * (j - 1)
    if spend_refuses(KEYS[nl + 2 * j - 1], tonumber(ARGV[base]), tonumber(ARGV[base + 1]),
                     tonumber(ARGV[base + 2])) then
      return reply({0, -2, nl + j})
    end
  end
end

-- Every limit has room: charge them all.
for i = 1, nl do
  local kind = ARGV[4 * i - 1]
  local a = tonumber(ARGV[4 * i])
  local b = tonumber(ARGV[4 * i + 1])
  local key = KEYS[i]
  if kind == 'b' then
    local left = tokens[i] - tonumber(ARGV[4 * i + 2])
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
if fresh then
  local lease, ttl = tonumber(ARGV[s0 + 1]), tonumber(ARGV[s0 + 2])
  for j = 1, ns do
    spend_hold(KEYS[nl + 2 * j - 1], KEYS[nl + 2 * j], hold_id, ARGV[s0 + 3 + 3 * (j - 1) + 1], now, lease, ttl)
  end
end
return reply({1})
