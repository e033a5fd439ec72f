-- Removes one dead letter by event id, if it is still the entry the caller read, and with
-- a replacement event pushes that onto a queue (a replay) in the same step.
--
-- Removal compares no entries: the oldest entry (the list's tail) is written over the
-- removed one (LSET, which walks list nodes, not entries) and popped, so the list keeps
-- every other entry and stays readable with LRANGE; only the oldest moves. Positions
-- count from the oldest end plus a base, so pushes at the newest end never move them.
--
-- KEYS[1] dead-letter list
-- KEYS[2] index: hash, event id -> "<position> <stored event>" (the newest entry of an id)
-- KEYS[3] positions: hash, position -> event id ('' for an unreadable entry)
-- KEYS[4] base: how many entries left the oldest end so far
-- KEYS[5] indexing lock: set while entries written before the index get positions
-- KEYS[6] the queue a replay goes to
-- KEYS[7] doorbell list
-- ARGV[1] event id
-- ARGV[2] the stored event the caller read (empty: whatever the index holds)
-- ARGV[3] the event to enqueue (empty: delete only)
-- Returns 1 removed, 0 not there (or the id now names another entry), -1 not indexed,
-- -2 indexing under way (try again shortly).
if redis.call('EXISTS', KEYS[5]) == 1 then return -2 end
local id = ARGV[1]
local indexed = redis.call('HGET', KEYS[2], id)
if not indexed then return -1 end
local pos = string.match(indexed, '^(%d+) ')
if ARGV[2] ~= '' and string.sub(indexed, #pos + 2) ~= ARGV[2] then return 0 end
local base = tonumber(redis.call('GET', KEYS[4]) or '0')
local k = tonumber(pos) - base
-- The position maps are kept with the list by every script that moves an entry, so
-- they, not a walk of the list, say whether the entry is still there.
if k < 0 or redis.call('HGET', KEYS[3], pos) ~= id then return 0 end
local index_moved = false
if k > 0 then
  -- The oldest entry has no position yet (written before the index): index first.
  local tail_id = redis.call('HGET', KEYS[3], base)
  if not tail_id then return -1 end
  local tail = redis.call('LINDEX', KEYS[1], -1)
  redis.call('LSET', KEYS[1], -(k + 1), tail)
  redis.call('HSET', KEYS[3], pos, tail_id)
  if tail_id ~= '' then
    local tail_indexed = redis.call('HGET', KEYS[2], tail_id)
    -- Re-point the index at the moved entry when it pointed at it, or when the moved
    -- entry is an older copy of the removed id (then it is that id's entry now).
    if tail_id == id or (tail_indexed and string.match(tail_indexed, '^(%d+) ') == tostring(base)) then
      redis.call('HSET', KEYS[2], tail_id, pos .. ' ' .. tail)
      index_moved = tail_id == id
    end
  end
end
redis.call('RPOP', KEYS[1])
redis.call('HDEL', KEYS[3], base)
if not index_moved then redis.call('HDEL', KEYS[2], id) end
redis.call('INCR', KEYS[4])
if ARGV[3] ~= '' then
  redis.call('LPUSH', KEYS[6], ARGV[3])
  redis.call('LPUSH', KEYS[7], 1)
  redis.call('LTRIM', KEYS[7], 0, 63)
end
return 1
