-- Takes back one consumer's batch if its lease ran out (checked again here, on Redis's
-- clock, so a lease renewed meanwhile is left alone): the events go back to the front of
-- their queues, the lease is dropped (its token can no longer renew or settle), and the
-- doorbell rings.
--
-- KEYS[1]     consumers: sorted set, consumer -> lease deadline (Unix ms, Redis clock)
-- KEYS[2]     leases: hash, consumer -> "<lease token> <priority>"
-- KEYS[3]     doorbell list
-- KEYS[4..6]  queues: high, normal, low
-- KEYS[7..9]  the consumer's taken lists: high, normal, low
-- ARGV[1]     consumer id
-- Returns how many events went back (-1: the lease had not run out).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
if deadline and tonumber(deadline) > now then return -1 end
local moved = 0
for i = 0, 2 do
  local taken = KEYS[7 + i]
  -- Back to the consumption end, keeping their order: a taken list is ordered as the
  -- queue is (newest at the head), so its newest goes first and its oldest ends up next
  -- to be taken.
  while true do
    local item = redis.call('LMOVE', taken, KEYS[4 + i], 'LEFT', 'RIGHT')
    if not item then break end
    moved = moved + 1
  end
end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
if moved > 0 then
  redis.call('LPUSH', KEYS[3], 1)
  redis.call('LTRIM', KEYS[3], 0, 63)
end
return moved
