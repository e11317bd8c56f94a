-- Announce one admin change to every process: bump the version key, then publish.
-- KEYS[1] the version key, ARGV[1] the channel, ARGV[2] the change (JSON).
-- The message is "<version> <change>"; returns the new version.
local v = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], tostring(v) .. ' ' .. ARGV[2])
return v
