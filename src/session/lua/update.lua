-- Replaces a session's data if its version is the expected one; the TTL is kept (HSET
-- does not change it).
-- KEYS: session
-- ARGV: id, data, expected version
-- Returns: {'ok', '0', session...}, {'missing'} or {'conflict', current version}
local now = now_ms()
local out = {'ok', '0'}
if not load(out, KEYS[1], ARGV[1], now) then
  return {'missing'}
end
-- out: 'ok', '0', id, user, kind, data, version, created, expires, deadline
if out[7] ~= ARGV[3] then
  return {'conflict', out[7]}
end
local version = string.format('%d', tonumber(ARGV[3]) + 1)
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'version', version)
out[6] = ARGV[2]
out[7] = version
return out
