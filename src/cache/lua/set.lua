-- Stores a cache value under a new version, keeps the key's tag sets exact, and publishes
-- the eviction notice, in one step. A loader's value (ARGV[5] set) is stored only if
-- nothing happened to the key, its namespace or its tags since the load read Redis.
--
-- KEYS[1]  the value key
-- KEYS[2]  the version counter of the key prefix
-- KEYS[3]  the key's tag list: set of the tags it is stored with
-- KEYS[4]  the namespace's clear marker (the version of the last clear)
-- KEYS[5..] the removal markers of the tags in ARGV[10..] (same order), then the tag sets
--          of those tags (same order), then the tag sets of the key's other stored tags
--          (added when the script answered `need`)
-- ARGV[1]  stored bytes before the version
-- ARGV[2]  stored bytes after the version
-- ARGV[3]  TTL (ms)
-- ARGV[4]  the namespace's tag-set prefix ("{prefix}~tagged:{namespace}:")
-- ARGV[5]  '' for a plain write; for a guarded write (a loader's value), the version the
--          load read: then a value or removal newer than it wins
-- ARGV[6]  backplane channel ('' for none)
-- ARGV[7]  notice head: "<instance> <sent µs>"
-- ARGV[8]  the key (member of the tag sets)
-- ARGV[9]  "<namespace>:<key>", for the notice
-- ARGV[10..] tags
-- Returns {version, false} when stored; {0, current} when a guarded write lost (current:
-- the stored value or tombstone that won, or false when a clear or tag marker did);
-- {'need', key...} when the key's stored tags name tag sets not in KEYS (nothing written).
local function version_of(stored)
  return tonumber(string.match(stored, '^{"version":(%d+)') or string.match(stored, '^%zBC2(%d+):') or '0')
end

local tags = #ARGV - 9
local new = {}
for i = 10, #ARGV do new[ARGV[i]] = true end
local old = {}
if redis.call('EXISTS', KEYS[3]) == 1 then old = redis.call('SMEMBERS', KEYS[3]) end
local touched = {}
for _, tag in ipairs(old) do touched[#touched + 1] = ARGV[4] .. tag end
for i = 10, #ARGV do touched[#touched + 1] = ARGV[4] .. ARGV[i] end
local need = undeclared(touched)
if need then return need end

if ARGV[5] ~= '' then
  local since = tonumber(ARGV[5])
  local current = redis.call('GET', KEYS[1])
  if current then
    -- A value set meanwhile wins; so does a removal since the load read.
    local removed = string.find(current, '"removed":true}', 1, true)
    if not removed or version_of(current) > since then return {0, current} end
  end
  for i = 4, 4 + tags do
    if (tonumber(redis.call('GET', KEYS[i]) or '0') or 0) > since then return {0, false} end
  end
end

local v = next_version(KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. v .. ARGV[2], 'PX', ARGV[3])

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if #old > 0 then
  for _, tag in ipairs(old) do
    if not new[tag] then redis.call('ZREM', ARGV[4] .. tag, ARGV[8]) end
  end
  redis.call('DEL', KEYS[3])
end
if #ARGV >= 10 then
  local expiry = now_ms + tonumber(ARGV[3])
  for i = 10, #ARGV do
    local set = ARGV[4] .. ARGV[i]
    redis.call('SADD', KEYS[3], ARGV[i])
    -- Members whose values expired are dropped as the set is written.
    redis.call('ZREMRANGEBYSCORE', set, '-inf', now_ms)
    redis.call('ZADD', set, expiry, ARGV[8])
    local last = redis.call('ZRANGE', set, -1, -1, 'WITHSCORES')
    redis.call('PEXPIREAT', set, last[2])
  end
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end

if ARGV[6] ~= '' then
  redis.call('PUBLISH', ARGV[6], ARGV[7] .. ' k ' .. v .. ' ' .. ARGV[9])
end
return {v, false}
