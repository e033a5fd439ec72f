-- Ends a take: failed events to their retry set (due on Redis's clock) or the dead-letter
-- list (and its position index), handled ids marked for de-duplication, the taken list and the
-- lease dropped. Fenced and idempotent: a token that no longer holds the lease changes
-- nothing, and repeating a settle that already ran (its reply was lost) changes nothing.
--
-- KEYS[1]  consumers: sorted set, consumer -> lease deadline
-- KEYS[2]  leases: hash, consumer -> "<lease token> <priority>"
-- KEYS[3]  the consumer's taken list of this priority
-- KEYS[4]  the retry sorted set of this priority
-- KEYS[5]  dead-letter list
-- KEYS[6]  dead-letter index: hash, event id -> "<position> <stored event>" (position:
--          from the oldest end, plus base)
-- KEYS[7]  dead-letter positions: hash, position -> event id ('' for an unreadable entry)
-- KEYS[8]  dead-letter base: how many entries left the oldest end so far
-- KEYS[9]  settled mark of this lease token
-- KEYS[10] totals: hash, handled / retried / dead -> events settled so far
-- KEYS[11..] de-duplication marks of the handled events (one per id)
-- ARGV[1]  consumer id
-- ARGV[2]  lease token
-- ARGV[3]  priority (0|1|2)
-- ARGV[4]  how long the settled mark and the lease record outlive the settle (ms)
-- ARGV[5]  de-duplication window (ms)
-- ARGV[6]  number of retries R, then R pairs: delay (ms), stored event
-- then     number of dead letters D, then D pairs: event id, stored event
-- Returns 1 settled now, 2 already settled by this token, 0 the lease is not this token's
-- (nothing changed).
if redis.call('EXISTS', KEYS[9]) == 1 then return 2 end
local held = redis.call('HGET', KEYS[2], ARGV[1])
if held ~= ARGV[2] .. ' ' .. ARGV[3] then return 0 end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local a = 6
local retries = tonumber(ARGV[a])
for i = 1, retries do
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[a + 2 * i - 1]), ARGV[a + 2 * i])
end
a = a + 2 * retries + 1
local dead = tonumber(ARGV[a])
if dead > 0 then
  local base = tonumber(redis.call('GET', KEYS[8]) or '0')
  local pos = base + redis.call('LLEN', KEYS[5])
  for i = 1, dead do
    local id, event = ARGV[a + 2 * i - 1], ARGV[a + 2 * i]
    -- An id already dead-lettered is replaced where it stands (its latest failure), so
    -- each id names one dead letter.
    local indexed = id ~= '' and redis.call('HGET', KEYS[6], id)
    local at = indexed and tonumber(string.match(indexed, '^(%d+) '))
    if at and at >= base and redis.call('HGET', KEYS[7], at) == id then
      redis.call('LSET', KEYS[5], -(at - base + 1), event)
      redis.call('HSET', KEYS[6], id, at .. ' ' .. event)
    else
      redis.call('LPUSH', KEYS[5], event)
      redis.call('HSET', KEYS[7], pos, id)
      if id ~= '' then redis.call('HSET', KEYS[6], id, pos .. ' ' .. event) end
      pos = pos + 1
    end
  end
end
local window = tonumber(ARGV[5])
for k = 11, #KEYS do
  redis.call('SET', KEYS[k], 'done', 'PX', window)
end
local held = redis.call('LLEN', KEYS[3])
if held > retries + dead then redis.call('HINCRBY', KEYS[10], 'handled', held - retries - dead) end
if retries > 0 then redis.call('HINCRBY', KEYS[10], 'retried', retries) end
if dead > 0 then redis.call('HINCRBY', KEYS[10], 'dead', dead) end
redis.call('DEL', KEYS[3])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SET', KEYS[9], 1, 'PX', ARGV[4])
return 1
