-- Leases up to ARGV[4] events of the first non-empty queue, in the order ARGV[5], to a
-- consumer, after moving due retries back into their queues. A consumer holds at most
-- one batch: while it holds one (the reply to the take that leased it was lost, or the
-- worker gave that take up), a take answers that batch again, under the new lease token,
-- instead of taking another. Repeating a take therefore never orphans events.
--
-- The events themselves are not in the reply: the caller reads the taken list with
-- LRANGE in the same pipeline (only this consumer touches its taken list while its lease,
-- just extended, runs). A taken list is ordered as the queues are, newest at the head, so
-- the events move through here without passing through Lua: a queue holding no more than
-- ARGV[4] events is renamed to the taken list whole, a longer one gives its oldest
-- ARGV[4] by RPOP.
--
-- KEYS[1]      consumers: sorted set, consumer -> lease deadline (Unix ms, Redis clock)
-- KEYS[2]      leases: hash, consumer -> "<lease token> <priority 0|1|2>"
-- KEYS[3]      doorbell list (rung when events are left behind or retries become due)
-- KEYS[4..6]   queues: high, normal, low
-- KEYS[7..9]   retry sorted sets (member: stored event, score: due Unix ms): high, normal, low
-- KEYS[10..12] this consumer's taken lists: high, normal, low
-- ARGV[1]      consumer id
-- ARGV[2]      lease token of this take
-- ARGV[3]      lease (ms)
-- ARGV[4]      most events to take
-- ARGV[5]      queue order, priorities as digits ("012" = high, normal, low)
-- Returns {priority, events taken, deadline, resumed}: resumed is 1 when the events are
-- the batch the consumer already held; or {-1, ms until the next retry is due (-1: none)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local consumer, token = ARGV[1], ARGV[2]
local lease, max = tonumber(ARGV[3]), tonumber(ARGV[4])
local deadline = now + lease

-- Lua's unpack has a stack limit: send long argument lists in chunks.
local function push(cmd, key, items)
  for i = 1, #items, 1000 do
    redis.call(cmd, key, unpack(items, i, math.min(i + 999, #items)))
  end
end

local function ring()
  redis.call('LPUSH', KEYS[3], 1)
  redis.call('LTRIM', KEYS[3], 0, 63)
end

local held = redis.call('HGET', KEYS[2], consumer)
if held then
  local p = tonumber(string.sub(held, -1))
  local held_events = redis.call('LLEN', KEYS[10 + p])
  if held_events > 0 then
    redis.call('HSET', KEYS[2], consumer, token .. ' ' .. p)
    redis.call('ZADD', KEYS[1], deadline, consumer)
    return {p, held_events, deadline, 1}
  end
  redis.call('HDEL', KEYS[2], consumer)
  redis.call('ZREM', KEYS[1], consumer)
end

local promoted = false
for i = 0, 2 do
  local retry = KEYS[7 + i]
  local due = redis.call('ZRANGE', retry, '-inf', now, 'BYSCORE', 'LIMIT', 0, 1000)
  if #due > 0 then
    push('LPUSH', KEYS[4 + i], due)
    push('ZREM', retry, due)
    promoted = true
  end
end

for c = 1, 3 do
  local p = tonumber(string.sub(ARGV[5], c, c))
  local queue, taken = KEYS[4 + p], KEYS[10 + p]
  local waiting = redis.call('LLEN', queue)
  if waiting > 0 then
    local n = math.min(waiting, max)
    -- (The taken list is empty here: a consumer without a lease holds nothing. Checked
    -- all the same, as RENAME would replace it.)
    if n == waiting and redis.call('EXISTS', taken) == 0 then
      redis.call('RENAME', queue, taken)
    else
      push('LPUSH', taken, redis.call('RPOP', queue, n))
    end
    redis.call('ZADD', KEYS[1], deadline, consumer)
    redis.call('HSET', KEYS[2], consumer, token .. ' ' .. p)
    if promoted or waiting > n then ring() end
    return {p, n, deadline, 0}
  end
end

local next_due = -1
for i = 0, 2 do
  local first = redis.call('ZRANGE', KEYS[7 + i], 0, 0, 'WITHSCORES')
  if first[2] then
    local due = math.max(0, tonumber(first[2]) - now)
    if next_due < 0 or due < next_due then next_due = due end
  end
end
return {-1, next_due}
