-- Lists the live sessions of a user, pruning ended ones from the index.
-- KEYS: index, then the session keys of its members
-- ARGV: prefix
-- Returns: {'ok', expired count, id, value, id, value, ...}, or {'need', key...} (nothing
--          written)
local now = now_ms()
local need = undeclared(member_keys(KEYS[1], ARGV[1]))
if need then
  return need
end
local expired = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {'ok', '0'}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local v = live(session_key(ARGV[1], id), now)
  if v then
    out[#out + 1] = id
    out[#out + 1] = v
  else
    redis.call('ZREM', KEYS[1], id)
    expired = expired + 1
  end
end
out[2] = tostring(expired)
expire_index(KEYS[1])
return out
