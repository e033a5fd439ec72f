-- Claims events for handling under a lease, for de-duplication by id: an id already
-- handled ("done") is skipped, and so is one being handled right now under another live
-- lease (a copy published twice and taken by two consumers at once). A claim left by a
-- lease that is gone (its worker died, or the batch was settled as failed) is taken over.
--
-- KEYS[1]  leases: hash, consumer -> "<lease token> <priority>"
-- KEYS[2..] de-duplication marks, one per event id
-- ARGV[1]  consumer id
-- ARGV[2]  lease token
-- ARGV[3]  how long a claim lasts unless settled (ms; the longer of the lease and the
--          window: a claim is live while its lease is, which the leases hash says)
-- Returns one integer per mark: 1 handle the event, 0 skip it.
local mine = 'c ' .. ARGV[1] .. ' ' .. ARGV[2]
local out = {}
for k = 2, #KEYS do
  local v = redis.call('GET', KEYS[k])
  local handle = 1
  if v == 'done' then
    handle = 0
  elseif v and v ~= mine then
    local c, token = string.match(v, '^c (%S+) (%S+)$')
    if not c then
      -- Any other mark (one written by an older version) means handled.
      handle = 0
    else
      local held = redis.call('HGET', KEYS[1], c)
      if held and string.sub(held, 1, -3) == token then handle = 0 end
    end
  end
  if handle == 1 then redis.call('SET', KEYS[k], mine, 'PX', ARGV[3]) end
  out[#out + 1] = handle
end
return out
