-- Deletes a session and removes it from its user's index.
-- KEYS: session, then its user's index
-- ARGV: id, prefix
-- Returns: {'ok'}, {'missing'} when it was not live, or {'need', index} (nothing written)
local now = now_ms()
local v = read(KEYS[1])
if not v then
  return {'missing'}
end
local index = index_key(ARGV[2], user_of(v))
local need = undeclared({index})
if need then
  return need
end
local was_live = expires_of(v) > now and deadline_of(v) > now
redis.call('DEL', KEYS[1])
redis.call('ZREM', index, ARGV[1])
prune(index, ARGV[2], now, false)
expire_index(index)
if was_live then
  return {'ok'}
end
return {'missing'}
