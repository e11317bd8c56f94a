-- Extend a held concurrency slot's lease on Redis's clock (only if it is still held).
-- KEYS[1] the concurrency set, ARGV[1] the slot's member, ARGV[2] the lease (s).
-- Returns 1 when renewed, 0 when the slot had already expired or been released.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease = tonumber(ARGV[2])
local renewed = redis.call('ZADD', KEYS[1], 'XX', 'CH', string.format('%.6f', now + lease), ARGV[1])
if renewed == 1 then
  redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000) + 1000)
end
return renewed
