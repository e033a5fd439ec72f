-- Shared by the cache scripts (prepended to each).
--
-- Versions: Redis's clock in microseconds, or one more than the last version handed out
-- when the clock is behind it, so they only grow (also across a failover to a replica
-- whose clock is slower). Formatted with %.0f: Lua's tostring would round them.

-- A new version, recorded in `counter` (the prefix's `~version` key).
local function next_version(counter)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local last = tonumber(redis.call('GET', counter) or '0') or 0
  if now <= last then now = last + 1 end
  local v = string.format('%.0f', now)
  redis.call('SET', counter, v)
  return v
end
