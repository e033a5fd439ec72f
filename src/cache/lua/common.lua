-- Shared by the cache scripts (prepended to each).
--
-- Versions: Redis's clock in microseconds, or one more than the last version handed out
-- when the clock is behind it, so they only grow (also across a failover to a replica
-- whose clock is slower). Formatted with %.0f: Lua's tostring would round them.

-- A new version, recorded in `counter` (the prefix's `~version` key).
local function next_version(counter)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local last = tonumber(redis.call('GET', counter) or '0') or 0
  if now <= last then now = last + 1 end
  local v = string.format('%.0f', now)
  redis.call('SET', counter, v)
  return v
end

-- A script touches only keys it was given in KEYS (Redis Cluster's rule). Keys found
-- through data (the tag sets of a key's stored tags, the members of a tag set) are checked
-- before anything is written; a script missing some writes nothing and answers
-- {'need', key...}, and the caller calls again with them added.
local DECLARED = {}
for _, k in ipairs(KEYS) do DECLARED[k] = true end

-- {'need', key...} for the keys of `keys` not given in KEYS, or nil when all were.
local function undeclared(keys)
  local need = {'need'}
  for _, k in ipairs(keys) do
    if not DECLARED[k] then need[#need + 1] = k end
  end
  if #need > 1 then return need end
  return nil
end
