-- Unlinks keys of a namespace being cleared, counting the live values among them (not
-- tombstones, tag sets or tag lists), so a clear answers what a reader lost.
--
-- KEYS     the keys to unlink
-- ARGV[1]  the namespace's value-key prefix
-- Returns the number of live values unlinked.
local values = 0
local prefix = ARGV[1]
for _, key in ipairs(KEYS) do
  if string.sub(key, 1, #prefix) == prefix then
    local v = redis.call('GET', key)
    if v and not string.find(v, '^{"version":%d+,"removed":true}$') then
      values = values + 1
    end
  end
end
redis.call('UNLINK', unpack(KEYS))
return values
