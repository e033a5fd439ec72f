-- Moves a session to a new id (RENAME keeps data, TTL and absolute end), restarts its
-- idle timeout, and swaps the id in its user's index. The old id is gone at once.
-- KEYS: old session, new session, then the user's index
-- ARGV: old id, new id, prefix
-- Returns: {'ok', '0', session...}, {'missing'}, {'exists'} if the new id is taken, or
--          {'need', index} (nothing written)
local now = now_ms()
local old = {}
if not load(old, KEYS[1], ARGV[1], now) then
  return {'missing'}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'exists'}
end
local need = undeclared({index_key(ARGV[3], old[2])})
if need then
  return need
end
redis.call('RENAME', KEYS[1], KEYS[2])
-- old: id, user, kind, data, version, created, expires, deadline
renew(KEYS[2], now, tonumber(old[7]), tonumber(redis.call('HGET', KEYS[2], 'idle')))
local index = index_key(ARGV[3], old[2])
redis.call('ZREM', index, ARGV[1])
redis.call('ZADD', index, old[7], ARGV[2])
expire_index(index)
local out = {'ok', '0'}
load(out, KEYS[2], ARGV[2], now)
return out
