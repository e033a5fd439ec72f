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
-- Fencing numbers come from one INCRBY per counter for all of a call's acquisitions,
-- handed out in item order: each is larger than every number handed out before it, and
-- a call costs one counter write however many callers it carries.
-- Returns, per item, two numbers. Acquire: 1 and the fencing token when acquired; 0 and
-- the lease's remaining ms when held by someone else. Release: 1 when released, 0 when
-- the caller did not hold it; then 0.
local call, find, byte = redis.call, string.find, string.byte

-- counter -> the next fencing number it hands out in this call
local fences = {}
local j = 1
for i = 1, #KEYS, 2 do
  if ARGV[j] == 'a' then
    local counter = KEYS[i + 1]
    fences[counter] = (fences[counter] or 0) + 1
  end
  j = j + 3
end
for counter, count in pairs(fences) do
  fences[counter] = call('INCRBY', counter, count) - count + 1
end

local out = {}
j = 1
for i = 1, #KEYS, 2 do
  local lease, token = KEYS[i], ARGV[j + 1]
  if ARGV[j] == 'a' then
    local counter = KEYS[i + 1]
    local fence = fences[counter]
    fences[counter] = fence + 1
    if call('SET', lease, token .. ':' .. fence, 'NX', 'PX', ARGV[j + 2]) then
      out[i] = 1
      out[i + 1] = fence
    else
      local held = call('GET', lease)
      if held and byte(held, -1) ~= 33 then
        call('APPEND', lease, '!')
      end
      out[i] = 0
      out[i + 1] = call('PTTL', lease)
    end
  else
    local held = call('GET', lease)
    out[i] = 0
    out[i + 1] = 0
    -- Held by this token: the lease starts with it and a ':'.
    if held and find(held, token, 1, true) == 1 and byte(held, #token + 1) == 58 then
      call('DEL', lease)
      if byte(held, -1) == 33 then
        call('PUBLISH', KEYS[i + 1], ARGV[j + 2])
      end
      out[i] = 1
    end
  end
  j = j + 3
end
return out
