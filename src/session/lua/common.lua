-- Shared by every session script (prepended to each).
--
-- "id" below is always the session's handle (SHA-256 of the id): the id never reaches Redis.
-- The key layout ({prefix}s:{id} string, {prefix}u:{userId} index) is described once, in
-- the module docs of src/session/redis.rs, and the value layout in src/session/record.rs:
--
--   s1 <version:20> <created:13> <expires:13> <idle:13> <deadline:13> <kind> <user>\n<data>
--
-- Numbers are zero-padded decimals at fixed offsets (times in unix ms, idle in ms), so a
-- script reads one with string.sub and moves the idle deadline in place with SETRANGE.
-- Every script that moves a session's PTTL also writes its deadline, so a plain read stays
-- one GET. Time is Redis's (TIME). A session is answered as 2 strings: id, value.
-- touch.lua and update.lua, the hot paths, stand alone and repeat the offsets they use.
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

-- Fields of a stored value (1-based, inclusive offsets of the layout above).
local function version_of(v) return tonumber(string.sub(v, 4, 23)) end
local function expires_of(v) return tonumber(string.sub(v, 39, 51)) end
local function idle_of(v) return tonumber(string.sub(v, 53, 65)) end
local function deadline_of(v) return tonumber(string.sub(v, 67, 79)) end
-- Offset (0-based, for SETRANGE) of the deadline, and where the header's text starts.
local DEADLINE_AT = 66
local TEXT_AT = 81

local function user_of(v)
  local nl = string.find(v, '\n', TEXT_AT, true)
  return string.match(string.sub(v, TEXT_AT, nl - 1), '^%S+ (.*)$')
end

local function encode(version, created, expires, idle, deadline, kind, user, data)
  return string.format('s1 %020d %013d %013d %013d %013d %s %s\n', version, created,
    expires, idle, deadline, kind, user) .. data
end

-- A session stored by a release before the string layout (a hash), rewritten in place in
-- the current layout with the same PTTL. Answers the value, or false.
local function upgrade(key)
  local f = redis.call('HMGET', key, 'user', 'kind', 'data', 'version', 'created', 'expires',
    'idle', 'deadline')
  if not f[1] then
    return false
  end
  local v = encode(tonumber(f[4]), tonumber(f[5]), tonumber(f[6]), tonumber(f[7]),
    tonumber(f[8]), f[2], f[1], f[3])
  local pttl = redis.call('PTTL', key)
  redis.call('DEL', key)
  if pttl > 0 then
    redis.call('SET', key, v, 'PX', pttl)
    return v
  end
  return false
end

-- The value at `key` (upgraded first when stored as a hash), or false.
local function read(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' and v.err then
    return upgrade(key)
  end
  return v
end

-- The live session value at `key`, or false (a value past its absolute end is deleted).
local function live(key, now)
  local v = read(key)
  if not v then
    return false
  end
  if expires_of(v) <= now then
    redis.call('DEL', key)
    return false
  end
  if deadline_of(v) <= now then
    return false
  end
  return v
end

-- Sets the idle deadline of the session `v` at `key` to `now + idle`, capped by its
-- absolute end: in the value and as its PTTL. Answers the new value.
local function renew(key, v, now)
  local deadline = math.min(now + idle_of(v), expires_of(v))
  local d = string.format('%013d', deadline)
  redis.call('SETRANGE', key, DEADLINE_AT, d)
  redis.call('PEXPIRE', key, math.max(1, deadline - now))
  return string.sub(v, 1, DEADLINE_AT) .. d .. string.sub(v, DEADLINE_AT + 14)
end

-- Drops members past their absolute end and, with `deep`, members whose session is gone
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
