-- Extends a lease, but only the lease this token was given: a worker whose batch was
-- taken back (reaped after its lease ran out) learns it here and stops handling it.
--
-- KEYS[1] consumers: sorted set, consumer -> lease deadline (Unix ms, Redis clock)
-- KEYS[2] leases: hash, consumer -> "<lease token> <priority>"
-- ARGV[1] consumer id
-- ARGV[2] lease token
-- ARGV[3] lease (ms)
-- Returns the new deadline (Unix ms), or -1 when the lease is no longer this token's.
local held = redis.call('HGET', KEYS[2], ARGV[1])
if not held or string.sub(held, 1, -3) ~= ARGV[2] then return -1 end
local t = redis.call('TIME')
local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], deadline, ARGV[1])
return deadline
