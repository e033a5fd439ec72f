-- Removes one dead letter by event id and with a replacement event pushes that onto a
-- queue (a replay) in the same step.
--
-- Removal compares no entries: the oldest entry (the list's tail) is written over the
-- removed one (LSET, which walks list nodes, not entries) and popped, so the list keeps every other
-- entry and stays readable with LRANGE; only the oldest moves. Positions count from the
-- oldest end plus a base, so pushes at the newest end never move them.
--
-- KEYS[1] dead-letter list
-- KEYS[2] index: hash, event id -> "<position> <stored event>"
-- KEYS[3] positions: hash, position -> event id ('' for an unreadable entry)
-- KEYS[4] base: how many entries left the oldest end so far
-- KEYS[5] the queue a replay goes to
-- KEYS[6] doorbell list
-- ARGV[1] event id
-- ARGV[2] the event to enqueue (empty: delete only)
-- Returns 1 removed, 0 not at its indexed position (gone, or the id now names another
-- entry), -1 not indexed.
local id = ARGV[1]
local indexed = redis.call('HGET', KEYS[2], id)
if indexed then
  local pos = string.match(indexed, '^(%d+) ')
  local base = tonumber(redis.call('GET', KEYS[4]) or '0')
  local k = tonumber(pos) - base
  -- The position maps are kept with the list by every script that moves an entry, so
  -- they, not a second walk of the list, say whether the entry is still there.
  if k < 0 or redis.call('HGET', KEYS[3], pos) ~= id then return 0 end
  if k > 0 then
    -- The oldest entry has no position yet (written before the index): index first.
    local tail_id = redis.call('HGET', KEYS[3], base)
    if not tail_id then return -1 end
    local tail = redis.call('LINDEX', KEYS[1], -1)
    redis.call('LSET', KEYS[1], -(k + 1), tail)
    redis.call('HSET', KEYS[3], pos, tail_id)
    if tail_id ~= '' then redis.call('HSET', KEYS[2], tail_id, pos .. ' ' .. tail) end
  end
  redis.call('RPOP', KEYS[1])
  redis.call('HDEL', KEYS[3], base)
  redis.call('HDEL', KEYS[2], id)
  redis.call('INCR', KEYS[4])
else
  return -1
end
if ARGV[2] ~= '' then
  redis.call('LPUSH', KEYS[5], ARGV[2])
  redis.call('LPUSH', KEYS[6], 1)
  redis.call('LTRIM', KEYS[6], 0, 63)
end
return 1
