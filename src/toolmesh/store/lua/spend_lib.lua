-- Shared by spend.lua and admit.lua (prepended to each when loaded): a spend scope is a hash
-- {used, res, n, r:<id> = amount | "d"} and a sorted set <id> -> expiry (see spend.lua).

-- Drop lapsed holds (a crashed request's) and lapsed done markers of one scope.
local function spend_purge(h, x, now)
  local gone = redis.call('ZRANGEBYSCORE', x, '-inf', string.format('%.6f', now))
  if #gone == 0 then return end
  for _, m in ipairs(gone) do
    local v = redis.call('HGET', h, 'r:' .. m)
    if v and v ~= 'd' then
      redis.call('HINCRBYFLOAT', h, 'res', -tonumber(v))
      redis.call('HINCRBY', h, 'n', -1)
    end
    redis.call('HDEL', h, 'r:' .. m)
  end
  redis.call('ZREMRANGEBYSCORE', x, '-inf', string.format('%.6f', now))
  if tonumber(redis.call('HGET', h, 'n') or '0') <= 0 then
    redis.call('HSET', h, 'n', 0, 'res', 0)  -- nothing held: no float residue
  end
end

-- Append used, reserved and in-flight count of the scopes whose hashes are KEYS[first], KEYS[first + 2], ...
local function spend_stats(out, first, count)
  for i = 1, count do
    local st = redis.call('HMGET', KEYS[first + 2 * (i - 1)], 'used', 'res', 'n')
    out[#out + 1] = st[1] or '0'
    out[#out + 1] = st[2] or '0'
    out[#out + 1] = st[3] or '0'
  end
  return out
end

-- Why a hold of `amount` on scope (h) would pass `limit`: false when it fits. Raises the scope's
-- spend to `floor` first (spend already recorded elsewhere: a restarted Redis starts there).
local function spend_refuses(h, limit, amount, floor)
  local used = tonumber(redis.call('HGET', h, 'used') or '0')
  if used < floor then
    redis.call('HSET', h, 'used', string.format('%.17g', floor))
    used = floor
  end
  local res = tonumber(redis.call('HGET', h, 'res') or '0')
  return used + res + amount > limit + 1e-12
end

-- Hold `amount` (a string, as sent) on one scope under reservation `id` for `lease` seconds.
local function spend_hold(h, x, id, amount, now, lease, ttl)
  redis.call('HSET', h, 'r:' .. id, amount)
  redis.call('HINCRBYFLOAT', h, 'res', amount)
  redis.call('HINCRBY', h, 'n', 1)
  redis.call('ZADD', x, string.format('%.6f', now + lease), id)
  redis.call('PEXPIRE', h, ttl)
  redis.call('PEXPIRE', x, ttl)
end
