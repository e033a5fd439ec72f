-- Deletes a session and removes it from its user's index.
-- KEYS: session, then its user's index
-- ARGV: id, prefix
-- Returns: {'ok'}, {'missing'} when it was not live, or {'need', index} (nothing written)
local now = now_ms()
local user = redis.call('HGET', KEYS[1], 'user')
if not user then
  return {'missing'}
end
local index = index_key(ARGV[2], user)
local need = undeclared({index})
if need then
  return need
end
local found = {}
local live = load(found, KEYS[1], ARGV[1], now)
redis.call('DEL', KEYS[1])
redis.call('ZREM', index, ARGV[1])
prune(index, ARGV[2], now, false)
expire_index(index)
if live then
  return {'ok'}
end
return {'missing'}
