-- Acquires and releases leases for several callers in one call (acquisitions and
-- releases of concurrent callers share calls). A lease is `{token}:{fence}` with a PX
-- expiry; an attempt that finds the name held marks the lease with a trailing `!`
-- (once), so only the release of a contended lease publishes its name, and waiters on
-- every instance try again.
--
-- Per item n (KEYS at i = 2n - 1, ARGV at j = 3n - 2):
-- KEYS[i]      the lease: {prefix}lease:{name}
-- KEYS[i + 1]  acquire: the fencing counter {prefix}fence;
--              release: the release channel {prefix}released
-- ARGV[j]      'a' (acquire) or 'r' (release)
-- ARGV[j + 1]  the caller's token
-- ARGV[j + 2]  acquire: lease (ms); release: the lock's name (the message)
-- Returns, per item, two numbers. Acquire: 1 and the fencing token when acquired; 0 and
-- the lease's remaining ms when held by someone else. Release: 1 when released, 0 when
-- the caller did not hold it; then 0.
local out = {}
local j = 1
for i = 1, #KEYS, 2 do
  local lease, token = KEYS[i], ARGV[j + 1]
  if ARGV[j] == 'a' then
    local fence = redis.call('INCR', KEYS[i + 1])
    if redis.call('SET', lease, token .. ':' .. fence, 'NX', 'PX', ARGV[j + 2]) then
      out[i] = 1
      out[i + 1] = fence
    else
      local held = redis.call('GET', lease)
      if held and string.sub(held, -1) ~= '!' then
        redis.call('APPEND', lease, '!')
      end
      out[i] = 0
      out[i + 1] = redis.call('PTTL', lease)
    end
  else
    local held = redis.call('GET', lease)
    out[i] = 0
    out[i + 1] = 0
    if held and string.sub(held, 1, #token + 1) == token .. ':' then
      redis.call('DEL', lease)
      if string.sub(held, -1) == '!' then
        redis.call('PUBLISH', KEYS[i + 1], ARGV[j + 2])
      end
      out[i] = 1
    end
  end
  j = j + 3
end
return out
