-- Sets a marker to a new version for a while: a namespace's clear marker, so a load that
-- read before the clear cannot store its value afterwards.
--
-- KEYS[1]  the marker
-- KEYS[2]  the version counter of the key prefix
-- ARGV[1]  marker TTL (ms)
-- Returns the version.
local v = next_version(KEYS[2])
redis.call('SET', KEYS[1], v, 'PX', ARGV[1])
return v
