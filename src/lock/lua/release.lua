-- Releases locks for several callers in one call; a lease marked contended (trailing
-- `!`) publishes its name so waiters on every instance try again.
--
-- Per item i (1, 3, 5, …):
-- KEYS[i]      the lease: {prefix}lease:{name}
-- KEYS[i + 1]  the release channel: {prefix}released
-- ARGV[i]      the owner's token
-- ARGV[i + 1]  the lock's name (the message)
-- Returns, per item, 1 when released, 0 when the caller did not hold it.
local out = {}
for i = 1, #KEYS, 2 do
  local held = redis.call('GET', KEYS[i])
  local released = 0
  if held and string.match(held, '^([^:]*):') == ARGV[i] then
    redis.call('DEL', KEYS[i])
    if string.sub(held, -1) == '!' then
      redis.call('PUBLISH', KEYS[i + 1], ARGV[i + 1])
    end
    released = 1
  end
  out[#out + 1] = released
end
return out
