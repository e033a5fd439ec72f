-- Reads one dead letter by event id through the position index: one hash lookup and one
-- LINDEX (which walks list nodes, not entries).
--
-- KEYS[1] dead-letter list
-- KEYS[2] index: hash, event id -> position (counted from the oldest end, plus the base)
-- KEYS[3] base: how many entries left the oldest end so far
-- ARGV[1] event id
-- Returns the stored event at the indexed position, or nil (not indexed).
local pos = redis.call('HGET', KEYS[2], ARGV[1])
if not pos then return false end
local k = tonumber(pos) - tonumber(redis.call('GET', KEYS[3]) or '0')
if k < 0 then return false end
return redis.call('LINDEX', KEYS[1], -(k + 1))
