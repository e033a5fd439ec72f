-- Renews sessions' idle timeouts from now, each capped by its session's absolute end: one
-- SET per session writes the new deadline into the value and moves the PTTL with it.
-- Concurrent touches share a call (one session per key); each is decided on its own.
--
-- A session whose deadline already lies within the renewal step of the renewed one
-- (a hundredth of its idle timeout, at most one second) is answered as it is, unwritten:
-- a burst of requests on one session writes it once.
--
-- The hottest script, so it stands alone (no common.lua: defining its helpers on every
-- call would cost more than the work); the offsets are those of the layout described
-- there.
-- KEYS: the sessions
-- ARGV: (none)
-- Returns: per session, its value with its new deadline; false when there is no live
--          session; -1 when it is still stored as a hash by an earlier release (the caller
--          rewrites it, upgrade.lua, and touches again).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local call, sub, format = redis.call, string.sub, string.format

local function touch(key)
  local v = redis.pcall('GET', key)
  if not v then
    return false
  end
  if type(v) ~= 'string' then
    return -1
  end
  local idle, deadline = tonumber(sub(v, 53, 65)), tonumber(sub(v, 67, 79))
  local expires = tonumber(sub(v, 39, 51))
  if deadline <= now or expires <= now then
    if expires <= now then
      call('DEL', key)
    end
    return false
  end
  local step = idle / 100
  if step > 1000 then
    step = 1000
  end
  local renewed = now + idle
  if renewed > expires then
    renewed = expires
  end
  if deadline + step >= renewed then
    return v
  end
  v = sub(v, 1, 66) .. format('%013d', renewed) .. sub(v, 80)
  call('SET', key, v, 'PX', renewed - now)
  return v
end

local out = {}
for i = 1, #KEYS do
  out[i] = touch(KEYS[i])
end
return out
