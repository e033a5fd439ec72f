-- Acquires locks for several callers in one call. A lease is `{token}:{fence}` with a PX
-- expiry; an attempt that finds the name held marks the lease with a trailing `!`
-- (once), so only the release of a contended lease publishes a wake-up.
--
-- Per item i (1, 3, 5, …):
-- KEYS[i]      the lease: {prefix}lease:{name}
-- KEYS[i + 1]  the fencing counter: {prefix}fence
-- ARGV[i]      the caller's token
-- ARGV[i + 1]  lease (ms)
-- Returns, per item, two numbers: 1 and the fencing token when acquired; 0 and the
-- lease's remaining ms when held by someone else.
local out = {}
for i = 1, #KEYS, 2 do
  local lock, token, ttl = KEYS[i], ARGV[i], ARGV[i + 1]
  local fence = redis.call('INCR', KEYS[i + 1])
  if redis.call('SET', lock, token .. ':' .. fence, 'NX', 'PX', ttl) then
    out[#out + 1] = 1
    out[#out + 1] = fence
  else
    local held = redis.call('GET', lock)
    if held and string.sub(held, -1) ~= '!' then
      redis.call('APPEND', lock, '!')
    end
    out[#out + 1] = 0
    out[#out + 1] = redis.call('PTTL', lock)
  end
end
return out
