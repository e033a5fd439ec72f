-- Deletes every session of a user and the index itself.
-- KEYS: index, then the session keys of its members
-- ARGV: prefix
-- Returns: {'ok', sessions deleted}, or {'need', key...} (nothing written)
local need = undeclared(member_keys(KEYS[1], ARGV[1]))
if need then
  return need
end
local revoked = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  revoked = revoked + redis.call('DEL', session_key(ARGV[1], id))
end
redis.call('DEL', KEYS[1])
return {'ok', tostring(revoked)}
