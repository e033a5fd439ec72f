-- Sets a marker to a new version for a while: a namespace's clear marker, so a load that
-- read before the clear cannot store its value afterwards.
--
-- KEYS[1]  the marker
-- KEYS[2]  the version counter of the key prefix
-- ARGV[1]  marker TTL (ms)
-- Returns the version.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if now <= last then now = last + 1 end
local v = string.format('%.0f', now)
redis.call('SET', KEYS[2], v)
redis.call('SET', KEYS[1], v, 'PX', ARGV[1])
return v
