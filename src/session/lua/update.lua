-- Replaces sessions' data where their version is the expected one, keeping the expiry.
-- No clock is needed: the key's PTTL never passes the idle deadline or the absolute end,
-- so a key that exists is live. Concurrent updates share a call (one
-- session per key); each is decided on its own.
--
-- Stands alone like touch.lua (see there); the offsets are those of the layout described
-- in common.lua. The caller writes both version fields as they are stored (`s1 ` and 20
-- digits), so the script compares and joins text and formats nothing. Each string a
-- script makes costs Redis about as much as an argument, so the new value is made in one
-- join of three, and the version is compared where it stands: string.find from the
-- first byte makes no string, and finds the expected start there when it matches.
--
-- Only the header is read: GETRANGE of the first bytes (HEAD, to the last byte read), then
-- GET only when the header is longer (a long user id). Reading the data too cost Redis
-- about 12 instructions a byte, as Lua interns every string it is given, and the caller
-- has the new data anyway. Offsets go to Redis as strings: a number argument costs it
-- about 2 k instructions to format. The new value is written over the old with SETRANGE,
-- which keeps the expiry and, unlike SET, reuses the stored string; SETRANGE answers the
-- length of the result, and when that is longer than the new value (shorter data than
-- before), SET KEEPTTL writes the value again at its own length.
-- KEYS: the sessions
-- ARGV: per session: data, the value's start at the expected version, its start at the
--       next version
-- Returns: per session, the rest of the new header (from the space after the version up
--          to and including its newline: the caller has the version and the data), false
--          when there is no session, the current version (an integer) when it is not the
--          expected one, or -1 when the session is still stored as a hash by an earlier
--          release (the caller rewrites it, upgrade.lua, and updates again).
local KEYS, ARGV = KEYS, ARGV
local HEAD = '127'
local call, pcall, sub, find = redis.call, redis.pcall, string.sub, string.find

local out = KEYS
local at = 0
for i = 1, #KEYS do
  local key = KEYS[i]
  local v = pcall('GETRANGE', key, '0', HEAD)
  if v == '' then
    out[i] = false
  elseif type(v) ~= 'string' then
    out[i] = -1
  elseif find(v, ARGV[at + 2], 1, true) ~= 1 then
    out[i] = tonumber(sub(v, 4, 23))
  else
    local nl = find(v, '\n', 81, true)
    if not nl then
      -- A header longer than HEAD (a long user id).
      v = call('GET', key)
      nl = find(v, '\n', 81, true)
    end
    local rest = sub(v, 24, nl)
    local new = ARGV[at + 3] .. rest .. ARGV[at + 1]
    if call('SETRANGE', key, '0', new) > #new then
      call('SET', key, new, 'KEEPTTL')
    end
    out[i] = rest
  end
  at = at + 3
end
return out
