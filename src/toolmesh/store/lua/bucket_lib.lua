-- Shared by admit.lua and adjust.lua (prepended when loaded): a token bucket is a hash {tk, ts}
-- (tokens left, Redis time of the last change); a missing one is full.

-- The tokens in bucket `key` at `now`, refilled at `rate` per second up to `capacity`.
local function bucket_level(key, rate, capacity, now)
  local st = redis.call('HMGET', key, 'tk', 'ts')
  local tk = tonumber(st[1])
  local ts = tonumber(st[2])
  if tk == nil or ts == nil then
    return capacity
  elseif now > ts then
    return math.min(capacity, tk + (now - ts) * rate)
  end
  return tk
end
