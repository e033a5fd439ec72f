-- Removes cache keys, named or by tag: each becomes a tombstone with a new version for a
-- short while (so a load that read before the removal cannot store its older value),
-- leaves its tag sets, and its eviction notice is published, in one step.
--
-- KEYS[1]  the version counter of the key prefix
-- KEYS[2]  by tag: the tag set (sorted set, key -> expiry of its value, Unix ms on Redis's
--          clock); the first ARGV[8] live members are removed
-- KEYS[3]  by tag: the tag's removal marker, set to the version (so a load that read
--          before cannot store a value with the tag)
-- ARGV[1]  tombstone and marker TTL (ms)
-- ARGV[2]  the namespace's value-key prefix ("{prefix}{namespace}:")
-- ARGV[3]  the namespace's tag-list prefix ("{prefix}~keytags:{namespace}:")
-- ARGV[4]  the namespace's tag-set prefix ("{prefix}~tagged:{namespace}:")
-- ARGV[5]  backplane channel ('' for none)
-- ARGV[6]  notice head: "<instance> <sent µs>"
-- ARGV[7]  the namespace
-- ARGV[8..] the keys; by tag, the batch size
-- Returns {version, {key, ...}}: the version of the removals and the keys removed.
local v = next_version(KEYS[1])

local keys = {}
if KEYS[2] then
  redis.call('SET', KEYS[3], v, 'PX', ARGV[1])
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
  keys = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[8]) - 1)
  -- Also when the key's tag list disagrees: the batch always leaves the set.
  if #keys > 0 then redis.call('ZREM', KEYS[2], unpack(keys)) end
else
  for i = 8, #ARGV do keys[#keys + 1] = ARGV[i] end
end

local tomb = '{"version":' .. v .. ',"removed":true}'
for _, key in ipairs(keys) do
  redis.call('SET', ARGV[2] .. key, tomb, 'PX', ARGV[1])
  local list = ARGV[3] .. key
  if redis.call('EXISTS', list) == 1 then
    for _, tag in ipairs(redis.call('SMEMBERS', list)) do
      redis.call('ZREM', ARGV[4] .. tag, key)
    end
    redis.call('DEL', list)
  end
  if ARGV[5] ~= '' then
    redis.call('PUBLISH', ARGV[5], ARGV[6] .. ' d ' .. v .. ' ' .. ARGV[7] .. ':' .. key)
  end
end
return {v, keys}
