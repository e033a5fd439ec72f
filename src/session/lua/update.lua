-- Replaces sessions' data where their version is the expected one, keeping the expiry.
-- No clock is needed: the key's PTTL never passes the idle deadline or the absolute end,
-- so a key that exists is live. Concurrent updates share a call (one
-- session per key); each is decided on its own.
--
-- Stands alone like touch.lua (see there); the offsets are those of the layout described
-- in common.lua. The caller writes both version fields as they are stored (`s1 ` and 20
-- digits), so the script compares text and formats nothing, and the version is compared
-- where it stands: string.find from the first byte makes no string, and finds the
-- expected start there when it matches.
--
-- Every string a script reads or makes costs Redis about 12 instructions a byte (Lua
-- interns it), and every redis.call about 3 k; a number argument costs about 2 k to
-- format. So:
-- - Only the header is read: GETRANGE of the first bytes (HEAD, to the last byte read),
--   then GET only when the header is longer (a long user id).
-- - The new version and the new data are written where they stand, each with SETRANGE
--   of the argument as it came (which keeps the expiry), instead of joining a new value:
--   the header stays as it is. The data's offset, the header's length, goes as a string,
--   made once per call for each length seen.
-- - SETRANGE answers the length of the result: when that is longer than the new value
--   (shorter data than before), SET KEEPTTL writes the value again at its own length.
-- - The answer is the string read, which the caller cuts at the header's newline.
-- KEYS: the sessions
-- ARGV: per session: data, the value's start at the expected version, its start at the
--       next version
-- Returns: per session, what was read of the value (its header, at the old version: the
--          caller has the new version and the data; a value with no header is answered as
--          read and left alone), false when there is no session, the current version (an
--          integer) when it is not the expected one, or -1 when the session is still stored as a hash by
--          an earlier release (the caller rewrites it, upgrade.lua, and updates again).
local KEYS, ARGV = KEYS, ARGV
local HEAD = '127'
local call, pcall, sub, find, tostring = redis.call, redis.pcall, string.sub, string.find, tostring

local offsets = {}
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
    if not nl then
      -- Not a session value: nothing is written, and the caller, finding no header in
      -- what was read, reports it as undecodable.
      out[i] = v
    else
      local offset = offsets[nl]
      if not offset then
        offset = tostring(nl)
        offsets[nl] = offset
      end
      local data, version = ARGV[at + 1], ARGV[at + 3]
      call('SETRANGE', key, '0', version)
      if call('SETRANGE', key, offset, data) > nl + #data then
        call('SET', key, version .. sub(v, 24, nl) .. data, 'KEEPTTL')
      end
      out[i] = v
    end
  end
  at = at + 3
end
return out
