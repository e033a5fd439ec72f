-- Extends a lease its owner still holds.
--
-- KEYS[1]  the lease: {prefix}lease:{name}
-- ARGV[1]  the owner's token
-- ARGV[2]  new lease (ms), from now
-- Returns -1 when extended (the fencing token is the one in the caller's token), the
-- fencing token when extended and the lease is in the layout of earlier releases
-- (`{owner}:{fence}`), or 0 when the caller does not hold it.
local held = redis.call('GET', KEYS[1])
if held and string.find(held, ARGV[1], 1, true) == 1 then
  local after = string.byte(held, #ARGV[1] + 1)
  if after == nil or after == 33 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return -1
  elseif after == 58 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(string.match(held, ':(%d+)'))
  end
end
return 0
