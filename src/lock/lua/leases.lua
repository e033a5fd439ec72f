-- Acquires and releases leases for several callers in one call (acquisitions and
-- releases of concurrent callers share calls). A lease holds its owner's token alone,
-- with a PX expiry; an attempt that finds the name held marks the lease with a trailing
-- `!` (once), so only the release of a contended lease publishes its name, and waiters on
-- every instance try again. The fencing token is not stored: the caller gets it in the
-- answer and gives it back in the token it hands out (`{owner}.{fence}`). Leases of
-- earlier releases, `{owner}:{fence}`, are still released by their owner.
--
-- KEYS[1]      the fencing counter {prefix}fence
-- ARGV[1]      the release channel {prefix}released (the message is the lock's name, cut
--              from the lease's key: what follows {prefix}lease:)
-- Then per item n (KEYS at n + 1, ARGV at j = 2n):
-- KEYS[n + 1]  the lease: {prefix}lease:{name}
-- ARGV[j]      the caller's owner token
-- ARGV[j + 1]  acquire: the lease (ms); release: an empty string
-- One INCRBY reserves a fencing number for each of the call's acquisitions; they are
-- handed out in item order to the acquisitions that succeed, so each is larger than every
-- number handed out before it (the ones left unused are gaps), and a call costs one
-- counter write however many callers it carries.
-- Returns one number per item. Acquire: the fencing token (at least 1) when acquired;
-- -1 - the lease's remaining ms (at most -1) when held by someone else. Release: 1 when
-- released, 0 when the caller did not hold it.
--
-- What each step costs Redis decides how it is written:
-- - Every string a script makes costs about as much as an argument, and turning a number
--   into text twice that: the lease is the token as it came.
-- - A status reply ('OK') reaches Lua as a new table; SET … GET answers nil instead (and
--   the holder of a taken name, without a GET of its own).
-- - A string equal to an argument is that argument (Lua keeps one copy of each string):
--   `held == token` compares two pointers, and a plain release stops there.
-- - The answers go into KEYS, read item by item ahead of them, instead of a table that
--   would grow as it fills.
-- - Globals read per item are locals: a global lookup per use costs a few percent.
local KEYS, ARGV = KEYS, ARGV
local call, find, byte = redis.call, string.find, string.byte

local acquisitions = 0
for j = 3, #ARGV, 2 do
  if ARGV[j] ~= '' then acquisitions = acquisitions + 1 end
end
local fence = 0
if acquisitions > 0 then
  fence = call('INCRBY', KEYS[1], acquisitions) - acquisitions + 1
end

-- Item n's answer goes to KEYS[n], once KEYS[n + 1] is read.
local items, cut = #KEYS - 1, #KEYS[1] + 2
local out = KEYS
local j = 2
for n = 1, items do
  local lease, token, ms = KEYS[n + 1], ARGV[j], ARGV[j + 1]
  if ms ~= '' then
    local held = call('SET', lease, token, 'NX', 'PX', ms, 'GET')
    if not held then
      out[n] = fence
      fence = fence + 1
    else
      if byte(held, -1) ~= 33 then
        call('APPEND', lease, '!')
      end
      -- PTTL is -2 if the lease expired in between: then 0 ms left.
      local left = call('PTTL', lease)
      if left < 0 then left = 0 end
      out[n] = -1 - left
    end
  else
    out[n] = 0
    local held = call('GET', lease)
    -- Held by this token: the lease is the token, then nothing (uncontended: nobody waits,
    -- nothing to publish), the mark `!`, or (a lease of an earlier release) `:` and the
    -- fencing token.
    if held == token then
      call('DEL', lease)
      out[n] = 1
    elseif held and find(held, token, 1, true) == 1 then
      local after = byte(held, #token + 1)
      if after == nil or after == 33 or after == 58 then
        call('DEL', lease)
        if byte(held, -1) == 33 then
          call('PUBLISH', ARGV[1], lease:sub(cut))
        end
        out[n] = 1
      end
    end
  end
  j = j + 2
end
out[items + 1] = nil
return out
