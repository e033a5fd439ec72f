-- Creates a session and adds it to its user's index. A user at the limit first loses
-- ended sessions, then the sessions closest to their absolute end (never the new one).
-- KEYS: session, index, then (for a user at the limit) the session keys of the index's
--       members
-- ARGV: id, user, kind, data, absolute timeout ms, idle timeout ms, prefix, max per user
-- Returns: {'ok', expired count, evicted count, id, value}, {'exists'} if the id is
--          taken, or {'need', key...} (nothing written)
local now = now_ms()
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'exists'}
end
local expires = now + tonumber(ARGV[5])
local idle = tonumber(ARGV[6])
local max = tonumber(ARGV[8])
if redis.call('ZCARD', KEYS[2]) >= max then
  local need = undeclared(member_keys(KEYS[2], ARGV[7]))
  if need then
    return need
  end
end
local expired = redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local evicted = 0
if redis.call('ZCARD', KEYS[2]) >= max then
  expired = expired + prune(KEYS[2], ARGV[7], now, true)
  local over = redis.call('ZCARD', KEYS[2]) - max + 1
  if over > 0 then
    for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, over - 1)) do
      evicted = evicted + redis.call('DEL', session_key(ARGV[7], id))
    end
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
  end
end
local deadline = math.min(now + idle, expires)
local v = encode(1, now, expires, idle, deadline, ARGV[3], ARGV[2], ARGV[4])
redis.call('SET', KEYS[1], v, 'PX', math.max(1, deadline - now))
redis.call('ZADD', KEYS[2], expires, ARGV[1])
expire_index(KEYS[2])
return {'ok', tostring(expired), tostring(evicted), ARGV[1], v}
