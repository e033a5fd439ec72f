-- Lists the live sessions of a user, pruning ended ones from the index.
-- KEYS: index, then the session keys of its members
-- ARGV: prefix
-- Returns: {'ok', expired count, session..., session..., ...} (8 strings each), or
--          {'need', key...} (nothing written)
local now = now_ms()
local need = undeclared(member_keys(KEYS[1], ARGV[1]))
if need then
  return need
end
local expired = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {'ok', '0'}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if not load(out, session_key(ARGV[1], id), id, now) then
    redis.call('ZREM', KEYS[1], id)
    expired = expired + 1
  end
end
out[2] = tostring(expired)
expire_index(KEYS[1])
return out
