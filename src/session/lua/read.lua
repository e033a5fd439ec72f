-- Reads a session, renewing its idle timeout when asked.
-- KEYS: session
-- ARGV: id, touch (1 or 0)
-- Returns: {'ok', '0', session...} or {'missing'}
local now = now_ms()
local f = redis.call('HMGET', KEYS[1], 'user', 'kind', 'data', 'version', 'created', 'expires',
  'deadline', 'idle')
if not f[1] then
  return {'missing'}
end
if ARGV[2] == '1' and tonumber(f[6]) > now then
  f[7] = string.format('%d', renew(KEYS[1], now, tonumber(f[6]), tonumber(f[8])))
end
local out = {'ok', '0'}
if not load(out, KEYS[1], ARGV[1], now, f) then
  return {'missing'}
end
return out
