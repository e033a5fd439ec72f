-- Replaces a session's data if its version is the expected one; SET KEEPTTL keeps the
-- expiry. No clock is needed: the key's PTTL never passes the idle deadline or the
-- absolute end, so a key that exists is live.
--
-- Stands alone like touch.lua (see there); the offsets are those of the layout described
-- in common.lua. The caller writes both version fields as they are stored (`s1 ` and 20
-- digits), so the script compares and replaces text and formats nothing. A session still
-- stored as a hash fails with WRONGTYPE; the caller upgrades it (upgrade.lua) and calls
-- again.
-- KEYS: session
-- ARGV: data, the value's start at the expected version, its start at the next version
-- Returns: the new header (the value up to and including its newline: the caller has the
--          data), nil when there is no session, or the current version (an integer) when
--          it is not the expected one.
local v = redis.call('GET', KEYS[1])
if not v then
  return false
end
if string.sub(v, 1, 23) ~= ARGV[2] then
  return tonumber(string.sub(v, 4, 23))
end
local head = ARGV[3] .. string.sub(v, 24, string.find(v, '\n', 81, true))
redis.call('SET', KEYS[1], head .. ARGV[1], 'KEEPTTL')
return head
