-- Shared by every session script (prepended to each).
--
-- "id" below is always the session's handle (SHA-256 of the id): the id never reaches Redis.
-- A session is a hash {prefix}s:{id} with fields user, kind, data (JSON), version,
-- created, expires (absolute end, unix ms), idle (idle timeout, ms). Its PTTL is the
-- idle deadline, never past the absolute end, so Redis drops an idle session by itself.
-- The index {prefix}u:{userId} is a sorted set of id -> absolute end (unix ms), pruned
-- on create, delete and list and expiring with its longest-lived member.
-- Time is Redis's (TIME), so every instance agrees on expiry.
-- A session is answered as 8 strings: id, user, kind, data, version, created, expires,
-- idle deadline (unix ms).

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

-- Appends the live session at `key` to `out`; answers false (and removes an ended hash)
-- when there is none.
local function load(out, key, id, now)
  local f = redis.call('HMGET', key, 'user', 'kind', 'data', 'version', 'created', 'expires')
  if not f[1] then
    return false
  end
  if tonumber(f[6]) <= now then
    redis.call('DEL', key)
    return false
  end
  local pttl = redis.call('PTTL', key)
  if pttl < 0 then
    return false
  end
  local n = #out
  out[n + 1] = id
  for i = 1, 6 do
    out[n + 1 + i] = f[i]
  end
  out[n + 8] = string.format('%d', now + pttl)
  return true
end

-- Sets the idle deadline of `key` to `now + idle`, capped by its absolute end.
local function renew(key, now)
  local f = redis.call('HMGET', key, 'expires', 'idle')
  local left = tonumber(f[1]) - now
  redis.call('PEXPIRE', key, math.max(1, math.min(tonumber(f[2]), left)))
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

