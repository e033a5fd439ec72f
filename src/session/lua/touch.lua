-- Renews a session's idle timeout from now, capped by its absolute end: one SET writes the
-- new deadline into the value and moves the PTTL with it.
--
-- The hottest script, so it stands alone (no common.lua: defining its helpers on every
-- call would cost more than the work); the offsets are those of the layout described
-- there. A session still stored as a hash fails with WRONGTYPE; the caller upgrades it
-- (upgrade.lua) and calls again.
-- KEYS: session
-- ARGV: (none)
-- Returns: the session's value with its new deadline, or nil when there is no live
--          session.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('GET', KEYS[1])
if not v then
  return false
end
local expires = tonumber(string.sub(v, 39, 51))
if expires <= now then
  redis.call('DEL', KEYS[1])
  return false
end
if tonumber(string.sub(v, 67, 79)) <= now then
  return false
end
local deadline = math.min(now + tonumber(string.sub(v, 53, 65)), expires)
local renewed = string.sub(v, 1, 66) .. string.format('%013d', deadline) .. string.sub(v, 80)
redis.call('SET', KEYS[1], renewed, 'PX', math.max(1, deadline - now))
return renewed
