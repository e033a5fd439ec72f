-- Creates a session and adds it to its user's index.
-- KEYS: session, index
-- ARGV: id, user, kind, data, absolute timeout ms, idle timeout ms, prefix
-- Returns: {'ok', expired count, session...} or {'exists'} if the id is taken
local now = now_ms()
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'exists'}
end
local expires = now + tonumber(ARGV[5])
local idle = tonumber(ARGV[6])
redis.call('HSET', KEYS[1], 'user', ARGV[2], 'kind', ARGV[3], 'data', ARGV[4],
  'version', '1', 'created', string.format('%d', now), 'expires', string.format('%d', expires),
  'idle', string.format('%d', idle))
redis.call('PEXPIRE', KEYS[1], math.min(idle, expires - now))
local expired = prune(KEYS[2], ARGV[7], now, true)
redis.call('ZADD', KEYS[2], expires, ARGV[1])
expire_index(KEYS[2])
local out = {'ok', tostring(expired)}
load(out, KEYS[1], ARGV[1], now)
return out
