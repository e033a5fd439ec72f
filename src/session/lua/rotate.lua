-- Moves a session to a new id (RENAME keeps data, TTL and absolute end), restarts its
-- idle timeout, and swaps the id in its user's index. The old id is gone at once.
-- KEYS: old session, new session, then the user's index
-- ARGV: old id, new id, prefix
-- Returns: {'ok', '0', id, value}, {'missing'}, {'exists'} if the new id is taken, or
--          {'need', index} (nothing written)
local now = now_ms()
local old = live(KEYS[1], now)
if not old then
  return {'missing'}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'exists'}
end
local index = index_key(ARGV[3], user_of(old))
local need = undeclared({index})
if need then
  return need
end
redis.call('RENAME', KEYS[1], KEYS[2])
local v = renew(KEYS[2], old, now)
local expires = expires_of(old)
redis.call('ZREM', index, ARGV[1])
redis.call('ZADD', index, expires, ARGV[2])
expire_index(index)
return {'ok', '0', ARGV[2], v}
