-- Shared by every session script (prepended to each).
--
-- "id" below is always the session's handle (SHA-256 of the id): the id never reaches Redis.
-- The key layout ({prefix}s:{id} hash, {prefix}u:{userId} index) is described once, in
-- the module docs of src/session/redis.rs. Every script that moves a session's PTTL also
-- writes its `deadline` field, so a plain read stays one HMGET. Time is Redis's (TIME).
-- A session is answered as 8 strings: id, user, kind, data, version, created, expires,
-- idle deadline (unix ms).
--
-- A script touches only keys it was given in KEYS (as Redis Cluster requires). The keys a
-- script finds through data (a session's index from its stored user, an index's sessions
-- from its members) are checked against KEYS before anything is written; when one is
-- missing the script writes nothing and answers {'need', key...}, and the caller calls
-- again with those keys added.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function session_key(prefix, id)
  return prefix .. 's:' .. id
end

local function index_key(prefix, user)
  return prefix .. 'u:' .. user
end

local DECLARED = {}
for _, k in ipairs(KEYS) do
  DECLARED[k] = true
end

-- {'need', key...} for the keys of `keys` not given in KEYS, or nil when all were.
local function undeclared(keys)
  local need = {'need'}
  for _, k in ipairs(keys) do
    if not DECLARED[k] then
      need[#need + 1] = k
    end
  end
  if #need > 1 then
    return need
  end
  return nil
end

-- The session keys of every member of `index`.
local function member_keys(index, prefix)
  local keys = {}
  for _, id in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    keys[#keys + 1] = session_key(prefix, id)
  end
  return keys
end

-- The fields of a session answer, in order (the last is the idle deadline, unix ms).
local FIELDS = {'user', 'kind', 'data', 'version', 'created', 'expires', 'deadline'}

-- Appends the live session at `key` to `out`; answers false (and removes a hash past its
-- absolute end) when there is none.
local function load(out, key, id, now)
  local f = redis.call('HMGET', key, unpack(FIELDS))
  if not f[1] then
    return false
  end
  if tonumber(f[6]) <= now then
    redis.call('DEL', key)
    return false
  end
  if tonumber(f[7]) <= now then
    return false
  end
  local n = #out
  out[n + 1] = id
  for i = 1, 7 do
    out[n + 1 + i] = f[i]
  end
  return true
end

-- Sets the idle deadline of `key` to `now + idle`, capped by its absolute end `expires`:
-- its PTTL and its `deadline` field. Answers the deadline.
local function renew(key, now, expires, idle)
  local deadline = math.min(now + idle, expires)
  redis.call('PEXPIRE', key, math.max(1, deadline - now))
  redis.call('HSET', key, 'deadline', string.format('%d', deadline))
  return deadline
end

-- Drops members past their absolute end and, with `deep`, members whose hash is gone
-- (idle timeout). Answers how many were dropped.
local function prune(index, prefix, now, deep)
  local dropped = redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  if deep then
    local ids = redis.call('ZRANGE', index, 0, -1)
    for _, id in ipairs(ids) do
      if redis.call('EXISTS', session_key(prefix, id)) == 0 then
        redis.call('ZREM', index, id)
        dropped = dropped + 1
      end
    end
  end
  return dropped
end

-- The index expires with its longest-lived member (or now, if it has none).
local function expire_index(index)
  local top = redis.call('ZRANGE', index, -1, -1, 'WITHSCORES')
  if top[2] then
    redis.call('PEXPIREAT', index, top[2])
  end
end

