-- Replaces a session's data if its version is the expected one; SET KEEPTTL keeps the
-- expiry. No clock is needed: the key's PTTL never passes the idle deadline or the
-- absolute end, so a key that exists is live.
--
-- Stands alone like touch.lua (see there); the offsets are those of the layout described
-- in common.lua. A session still stored as a hash fails with WRONGTYPE; the caller
-- upgrades it (upgrade.lua) and calls again.
-- KEYS: session
-- ARGV: data, expected version
-- Returns: the new header (the value up to and including its newline: the caller has the
--          data), nil when there is no session, or the current version (an integer) when
--          it is not the expected one.
local v = redis.call('GET', KEYS[1])
if not v then
  return false
end
local version = tonumber(string.sub(v, 4, 23))
if version ~= tonumber(ARGV[2]) then
  return version
end
local head = string.format('s1 %020d', version + 1) ..
  string.sub(v, 24, string.find(v, '\n', 81, true))
redis.call('SET', KEYS[1], head .. ARGV[1], 'KEEPTTL')
return head
