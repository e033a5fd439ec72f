-- Extends a lease its owner still holds.
--
-- KEYS[1]  the lease: {prefix}lease:{name}
-- ARGV[1]  the owner's token
-- ARGV[2]  new lease (ms), from now
-- Returns the lease's fencing token, or 0 when the caller does not hold it.
local held = redis.call('GET', KEYS[1])
if held and string.match(held, '^([^:]*):') == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(string.match(held, ':(%d+)'))
end
return 0
