-- Correct one token bucket by a number of tokens, on Redis's clock (a model call's real token
-- usage against the estimate it was admitted with): refill first, then take ARGV[3] (negative:
-- give back), never above the capacity; below zero is allowed (later admissions wait for the
-- refill). The bucket is admit.lua's (bucket_lib.lua is prepended when loaded).
-- KEYS[1] the bucket; ARGV[1] refill rate (tokens/s), ARGV[2] capacity, ARGV[3] tokens to take.
-- Returns the tokens left, as a string.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local a = tonumber(ARGV[1])
local b = tonumber(ARGV[2])
local left = math.min(b, bucket_level(KEYS[1], a, b, now) - tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'tk', string.format('%.17g', left), 'ts', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((b - left) / a * 1000) + 1000)
return string.format('%.17g', left)
