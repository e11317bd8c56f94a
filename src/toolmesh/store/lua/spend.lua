-- Daily spend reservations shared by every replica (budget scopes), on Redis's clock.
-- (spend_lib.lua is prepended when loaded: spend_purge, spend_stats, spend_refuses, spend_hold.)
--
-- Per scope i: KEYS[2i-1] a hash {used, res, n, r:<id> = amount | "d"}, KEYS[2i] a sorted set
-- <id> -> expiry (a held reservation's lease; a settled id's "done" marker until it lapses).
-- All keys of one call carry the same {tenant} hash tag (one Cluster slot).
--
-- ARGV[1] op: "hold" | "settle" | "renew" | "peek"
-- ARGV[2] the reservation id (idempotency: holding or settling an id twice counts once)
-- ARGV[3] lease (s): how long a hold lives without renewal; done markers live 2 x lease
-- ARGV[4] key TTL (ms): every write re-arms it (a day's keys outlive the day)
-- then per scope: hold: limit, amount, floor (spend already recorded: used starts there)
--                 settle: actual cost (0 to release unused)
--                 renew, peek: nothing
-- Reply: {decision, refusing scope index (0 if none), then used, reserved, in flight per scope};
-- decision 1 = held / settled / renewed, 0 = refused (hold only), 2 = the id was already settled.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local op, id = ARGV[1], ARGV[2]
local lease, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local n = #KEYS / 2
local per = 0
if op == 'hold' then per = 3 elseif op == 'settle' then per = 1 end
local field = 'r:' .. id

local function touch(h, x)
  redis.call('PEXPIRE', h, ttl)
  redis.call('PEXPIRE', x, ttl)
end

for i = 1, n do
  spend_purge(KEYS[2 * i - 1], KEYS[2 * i], now)
end

if op == 'peek' then
  return spend_stats({1, 0}, 1, n)
end

local first = redis.call('HGET', KEYS[1], field)
if first == 'd' then
  return spend_stats({2, 0}, 1, n)  -- settled already: a retry of a call that went through
end

if op == 'renew' then
  for i = 1, n do
    if redis.call('HGET', KEYS[2 * i - 1], field) then
      redis.call('ZADD', KEYS[2 * i], 'XX', string.format('%.6f', now + lease), id)
    end
  end
  return spend_stats({1, 0}, 1, n)
end

if op == 'hold' then
  if first then
    return spend_stats({1, 0}, 1, n)  -- held already: a retry of a call that went through
  end
  for i = 1, n do
    local base = 4 + per * (i - 1)
    if spend_refuses(KEYS[2 * i - 1], tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])) then
      return spend_stats({0, i}, 1, n)
    end
  end
  for i = 1, n do
    spend_hold(KEYS[2 * i - 1], KEYS[2 * i], id, ARGV[4 + per * (i - 1) + 2], now, lease, ttl)
  end
  return spend_stats({1, 0}, 1, n)
end

if op == 'settle' then
  for i = 1, n do
    local h, x = KEYS[2 * i - 1], KEYS[2 * i]
    local v = redis.call('HGET', h, field)
    if v then
      redis.call('HINCRBYFLOAT', h, 'res', -tonumber(v))
      if redis.call('HINCRBY', h, 'n', -1) <= 0 then
        redis.call('HSET', h, 'n', 0, 'res', 0)  -- nothing held: no float residue
      end
    end
    -- A hold that lapsed (its request outlived the lease unrenewed) is still charged: the money was spent.
    local actual = tonumber(ARGV[4 + i])
    if actual ~= 0 then
      redis.call('HINCRBYFLOAT', h, 'used', actual)
    end
    redis.call('HSET', h, field, 'd')
    redis.call('ZADD', x, string.format('%.6f', now + 2 * lease), id)
    touch(h, x)
  end
  return spend_stats({1, 0}, 1, n)
end

return redis.error_reply('unknown spend op ' .. tostring(op))
