-- Shared circuit-breaker state: one field of the hash KEYS[1] per open or half-open circuit
-- (a closed circuit has no field). A record is {s = state, o = owner, t = opened at, l = lease end}
-- on Redis's clock; only its owner (the process that opened it, or took it over once the owner's
-- lease lapsed) may half-open it, so one probe runs across all processes.
-- ARGV: op (open | half | close | claim | renew | all), field, owner, lease (s), channel.
-- Returns {record JSON or nil, Redis time}; "all" returns {HGETALL, Redis time}.
local op, field, owner, lease, channel = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local stamp = string.format('%.6f', now)

if op == 'all' then
  return {redis.call('HGETALL', KEYS[1]), stamp}
end
if op == 'renew' then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local rec = cjson.decode(all[i + 1])
    if rec.o == owner then
      rec.l = now + lease
      redis.call('HSET', KEYS[1], all[i], cjson.encode(rec))
    end
  end
  return {false, stamp}
end

local function put(rec)
  local raw = cjson.encode(rec)
  redis.call('HSET', KEYS[1], field, raw)
  redis.call('PUBLISH', channel, field .. '\n' .. stamp .. '\n' .. raw)
  return raw
end

local raw = redis.call('HGET', KEYS[1], field)
local rec = raw and cjson.decode(raw) or nil
local free = rec == nil or rec.o == owner or rec.l < now

if op == 'open' then
  if free then raw = put({s = 'open', o = owner, t = now, l = now + lease}) end
elseif op == 'half' then
  if free then raw = put({s = 'half-open', o = owner, t = rec and rec.t or now, l = now + lease}) end
elseif op == 'claim' then
  if rec ~= nil and rec.o ~= owner and rec.l < now then
    rec.o = owner
    rec.l = now + lease
    raw = put(rec)
  end
elseif op == 'close' then
  if rec ~= nil then
    redis.call('HDEL', KEYS[1], field)
    redis.call('PUBLISH', channel, field .. '\n' .. stamp .. '\n')
    raw = false
  end
else
  return redis.error_reply('unknown op ' .. op)
end
return {raw or false, stamp}
