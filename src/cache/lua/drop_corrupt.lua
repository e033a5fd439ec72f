-- Deletes a stored value that could not be read, unless it changed since it was read.
--
-- KEYS[1]  the value key
-- ARGV[1]  the bytes that were read
-- Returns 1 when deleted.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
