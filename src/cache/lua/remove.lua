-- Removes cache keys, named or by tag: each becomes a tombstone with a new version for a
-- short while (so a load that read before the removal cannot store its older value),
-- leaves its tag sets, and its eviction notice is published, in one step.
--
-- KEYS[1]  the version counter of the key prefix
-- KEYS[2]  by tag: the tag set (sorted set, key -> expiry of its value, Unix ms on Redis's
--          clock); the first ARGV[9] live members are removed
-- KEYS[3]  by tag: the tag's removal marker, set to the version (so a load that read
--          before cannot store a value with the tag)
-- KEYS[..] the value key and tag list of each key removed, and the tag sets named in
--          those lists (named keys: given by the caller; by tag: added when the script
--          answered `need`)
-- ARGV[1]  tombstone and marker TTL (ms)
-- ARGV[2]  the namespace's value-key prefix ("{prefix}{namespace}:")
-- ARGV[3]  the namespace's tag-list prefix ("{prefix}~keytags:{namespace}:")
-- ARGV[4]  the namespace's tag-set prefix ("{prefix}~tagged:{namespace}:")
-- ARGV[5]  backplane channel ('' for none)
-- ARGV[6]  notice head: "<instance> <sent µs>"
-- ARGV[7]  the namespace
-- ARGV[8]  'tag' (remove by tag) or 'keys' (the keys named)
-- ARGV[9..] the keys; by tag, the batch size
-- Returns {version, {key, ...}}: the version of the removals and the keys removed; or
-- {'need', key...} (nothing written).
local by_tag = ARGV[8] == 'tag'
local keys = {}
local now_ms
if by_tag then
  local t = redis.call('TIME')
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  -- The first live members (expired ones are dropped below, unread).
  keys = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now_ms, '+inf', 'LIMIT', 0, tonumber(ARGV[9]))
else
  for i = 9, #ARGV do keys[#keys + 1] = ARGV[i] end
end

-- Every key this removal touches must be in KEYS: the value keys and tag lists first,
-- then (once those can be read) the tag sets the lists name.
local touched = {}
for _, key in ipairs(keys) do
  touched[#touched + 1] = ARGV[2] .. key
  touched[#touched + 1] = ARGV[3] .. key
end
local need = undeclared(touched)
if need then return need end
local lists = {}
for i, key in ipairs(keys) do
  local list = ARGV[3] .. key
  if redis.call('EXISTS', list) == 1 then lists[i] = redis.call('SMEMBERS', list) else lists[i] = {} end
  for _, tag in ipairs(lists[i]) do touched[#touched + 1] = ARGV[4] .. tag end
end
need = undeclared(touched)
if need then return need end

local v = next_version(KEYS[1])
if by_tag then
  redis.call('SET', KEYS[3], v, 'PX', ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
  -- Also when the key's tag list disagrees: the batch always leaves the set.
  if #keys > 0 then redis.call('ZREM', KEYS[2], unpack(keys)) end
end

local tomb = '{"version":' .. v .. ',"removed":true}'
for i, key in ipairs(keys) do
  redis.call('SET', ARGV[2] .. key, tomb, 'PX', ARGV[1])
  if #lists[i] > 0 then
    for _, tag in ipairs(lists[i]) do
      redis.call('ZREM', ARGV[4] .. tag, key)
    end
    redis.call('DEL', ARGV[3] .. key)
  end
  if ARGV[5] ~= '' then
    redis.call('PUBLISH', ARGV[5], ARGV[6] .. ' d ' .. v .. ' ' .. ARGV[7] .. ':' .. key)
  end
end
return {v, keys}
