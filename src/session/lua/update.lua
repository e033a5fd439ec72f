-- Replaces a session's data if its version is the expected one; the TTL is kept (HSET
-- does not change it). The data is not read or answered: the caller has it.
-- KEYS: session
-- ARGV: data, expected version
-- Returns: {'ok', user, kind, version, created, expires, deadline}, {'missing'} or
-- {'conflict', current version}
local now = now_ms()
local f = redis.call('HMGET', KEYS[1], 'user', 'kind', 'version', 'created', 'expires',
  'deadline')
if not f[1] then
  return {'missing'}
end
if tonumber(f[5]) <= now then
  redis.call('DEL', KEYS[1])
  return {'missing'}
end
if tonumber(f[6]) <= now then
  return {'missing'}
end
if f[3] ~= ARGV[2] then
  return {'conflict', f[3]}
end
local version = string.format('%d', tonumber(ARGV[2]) + 1)
redis.call('HSET', KEYS[1], 'data', ARGV[1], 'version', version)
return {'ok', f[1], f[2], version, f[4], f[5], f[6]}
