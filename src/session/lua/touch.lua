-- Renews a session's idle timeout from now, capped by its absolute end. The caller reads
-- the session with a plain HMGET right behind this script, in the same round trip, so no
-- session data passes through Lua.
-- KEYS: session
-- ARGV: (none)
-- Returns: the new idle deadline (unix ms), or 0 when there is no live session.
local now = now_ms()
local f = redis.call('HMGET', KEYS[1], 'expires', 'idle', 'deadline')
if not f[1] then
  return 0
end
local expires = tonumber(f[1])
if expires <= now then
  redis.call('DEL', KEYS[1])
  return 0
end
if tonumber(f[3]) <= now then
  return 0
end
return renew(KEYS[1], now, expires, tonumber(f[2]))
