-- Extends a lease its owner still holds.
--
-- KEYS[1]  the lease: {prefix}lease:{name}
-- ARGV[1]  the owner's token
-- ARGV[2]  new lease (ms), from now
-- ARGV[3]  '1' when the caller's token carries its fencing token (every token this
--          release issues), '' when it is the owner alone (as earlier releases issued them)
-- Returns -1 when extended (the fencing token is the one in the caller's token), the
-- fencing token when extended and the lease is in the layout of earlier releases
-- (`{owner}:{fence}`), or 0 when the caller does not hold it. A lease of this release is
-- extended only for a token that carries its fencing token: nothing else could answer it.
local held = redis.call('GET', KEYS[1])
if held and string.find(held, ARGV[1], 1, true) == 1 then
  local after = string.byte(held, #ARGV[1] + 1)
  if (after == nil or after == 33) and ARGV[3] ~= '' then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return -1
  elseif after == 58 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(string.match(held, ':(%d+)'))
  end
end
return 0
