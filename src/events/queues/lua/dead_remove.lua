-- Removes one dead letter by event id, if it is still the entry the caller read, and
-- with a replacement event pushes that onto a queue (a replay) in the same step.
--
-- KEYS[1] dead-letter list
-- KEYS[2] dead-letter index: hash, event id -> stored event
-- KEYS[3] the queue a replay goes to
-- KEYS[4] doorbell list
-- ARGV[1] event id
-- ARGV[2] the stored event the caller read
-- ARGV[3] the event to enqueue (empty: delete only)
-- Returns 1 removed, 0 not there (or the id now names another entry).
-- An entry the index does not know (written before the index existed) is removed by
-- its bytes alone.
local indexed = redis.call('HGET', KEYS[2], ARGV[1])
if indexed and indexed ~= ARGV[2] then return 0 end
if redis.call('LREM', KEYS[1], -1, ARGV[2]) == 0 then return 0 end
if indexed then redis.call('HDEL', KEYS[2], ARGV[1]) end
if ARGV[3] ~= '' then
  redis.call('LPUSH', KEYS[3], ARGV[3])
  redis.call('LPUSH', KEYS[4], 1)
  redis.call('LTRIM', KEYS[4], 0, 63)
end
return 1
