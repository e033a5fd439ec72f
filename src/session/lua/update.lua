-- Replaces sessions' data where their version is the expected one; SET KEEPTTL keeps the
-- expiry. No clock is needed: the key's PTTL never passes the idle deadline or the
-- absolute end, so a key that exists is live. Concurrent updates share a call (one
-- session per key); each is decided on its own.
--
-- Stands alone like touch.lua (see there); the offsets are those of the layout described
-- in common.lua. The caller writes both version fields as they are stored (`s1 ` and 20
-- digits), so the script compares and replaces text and formats nothing.
-- KEYS: the sessions
-- ARGV: per session: data, the value's start at the expected version, its start at the
--       next version
-- Returns: per session, the new header (the value up to and including its newline: the
--          caller has the data), false when there is no session, the current version (an
--          integer) when it is not the expected one, or -1 when the session is still
--          stored as a hash by an earlier release (the caller rewrites it, upgrade.lua,
--          and updates again).
local call, sub = redis.call, string.sub

local function update(key, data, expected, next)
  local v = redis.pcall('GET', key)
  if not v then
    return false
  end
  if type(v) ~= 'string' then
    return -1
  end
  if sub(v, 1, 23) ~= expected then
    return tonumber(sub(v, 4, 23))
  end
  local head = next .. sub(v, 24, string.find(v, '\n', 81, true))
  call('SET', key, head .. data, 'KEEPTTL')
  return head
end

local out = {}
for i = 1, #KEYS do
  local at = 3 * i
  out[i] = update(KEYS[i], ARGV[at - 2], ARGV[at - 1], ARGV[at])
end
return out
