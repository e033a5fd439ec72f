-- Gives positions to one chunk of dead letters written before the index existed, while
-- the caller holds the indexing lock (dead_remove refuses to run meanwhile) and nothing
-- has left the oldest end since indexing began.
--
-- KEYS[1] index: hash, event id -> "<position> <stored event>"
-- KEYS[2] positions: hash, position -> event id
-- KEYS[3] base: how many entries left the oldest end so far
-- KEYS[4] indexing lock
-- ARGV[1] lock token
-- ARGV[2] the base when indexing began
-- ARGV[3] position of the chunk's first (oldest) entry
-- then    pairs, oldest first: event id ('' for unreadable), stored event
-- Returns 1 indexed, 0 abandoned (the lock or the base changed: start again).
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return 0 end
if (redis.call('GET', KEYS[3]) or '0') ~= ARGV[2] then return 0 end
local pos = tonumber(ARGV[3])
for i = 4, #ARGV, 2 do
  local id, stored = ARGV[i], ARGV[i + 1]
  redis.call('HSET', KEYS[2], pos, id)
  if id ~= '' then
    -- The newest copy of an id wins, as at settle: later chunks are newer.
    redis.call('HSET', KEYS[1], id, pos .. ' ' .. stored)
  end
  pos = pos + 1
end
return 1
