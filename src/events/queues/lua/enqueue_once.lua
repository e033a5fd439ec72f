-- Enqueues an event unless its id was published within the window (publish-time
-- idempotency): the mark and the push happen together, so a publish repeated after a lost
-- reply, or a signed call replayed by someone else, stores the event once.
--
-- KEYS[1] publish mark of the event id
-- KEYS[2] the queue
-- KEYS[3] doorbell list
-- ARGV[1] the stored event
-- ARGV[2] window (ms)
-- Returns 1 enqueued, 0 already published within the window.
if not redis.call('SET', KEYS[1], 1, 'NX', 'PX', ARGV[2]) then
  -- A repeat: still write (the mark, unchanged), so a WAIT after this call covers the
  -- first push too (replication is ordered) and a repeat is acknowledged only once the
  -- event is on the replicas.
  redis.call('SET', KEYS[1], 1, 'XX', 'KEEPTTL')
  return 0
end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('LPUSH', KEYS[3], 1)
redis.call('LTRIM', KEYS[3], 0, 63)
return 1
