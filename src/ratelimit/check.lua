-- Rate-limit checks, mirroring src/ratelimit/algorithm.rs operation for operation.
--
-- KEYS[i]  the key of check i: {keyPrefix}{rule}:{key}, the only key it touches.
-- ARGV[i]  check i's rule and cost, packed: the algorithm's tag byte ('G' gcra, 'F'
--          fixedWindow, 'S' slidingWindow, as in stored values), then the limit, the
--          period (µs), the burst (GCRA's) and the cost as little-endian doubles. One
--          argument per check, as each costs Redis about 1 k instructions; a spec is
--          unpacked once per call however many checks share it. Packed, because reading
--          the same numbers from text (string.match, tonumber) cost about 11 k per call.
-- Returns  per check, admitted: remaining, reset_after_us; limited: -1 - remaining (so a
--          negative first value means limited), retry_after_us, reset_after_us. Each
--          integer in the reply costs Redis about as much as a third of a `GET`, so the
--          verdict rides on the sign instead of a further integer, and an admitted check,
--          whose retry_after is 0, leaves it out.
--
-- Time is Redis's own clock (TIME), read once, in microseconds since EPOCH, so every
-- instance checking the same key agrees whatever its local clock says.
--
-- Stored values are packed with `struct` (a tag byte, then little-endian doubles), because
-- formatting numbers as text cost Redis more than the rest of a check:
--   GCRA            'G' tat expires      (the arrival time; when the key's expiry is set)
--   fixed window    'F' window count
--   sliding window  'S' window count previous-count
-- While the key's expiry is still late enough, a write overwrites only the number that
-- changed (the arrival time, the count), in place (SETRANGE, which keeps the expiry), so
-- a TTL is formatted only when the expiry has to move: once per window, and for GCRA when the arrival time passes the expiry, which is
-- then set one burst span beyond it. Values in the text layout of earlier releases
-- ("<tat>", "<window> <count> [<previous>]") are still read, and rewritten packed.
--
-- Functions used per check are locals, and so are KEYS and ARGV: a global lookup per use
-- cost a few percent. The rule
-- of the check being decided is in locals too (`limit` to `burst_span`, and the cost),
-- set once per run of checks sharing a spec, so the algorithms take only the key and the
-- cost.

local KEYS, ARGV = KEYS, ARGV
local EPOCH = 1735689600
local G, F, S = 71, 70, 83

-- Arithmetic reads TIME's two strings as numbers once each (tonumber would twice).
local t = redis.call('TIME')
local now = (t[1] - EPOCH) * 1000000 + t[2]
local pack, unpack = struct.pack, struct.unpack
local floor, ceil, byte, call = math.floor, math.ceil, string.byte, redis.call

-- The rule being applied: its limit and period (µs), and GCRA's emission interval and
-- burst span (the rule's burst times the interval).
local limit, period, interval, burst_span

local function floor0(x)
  if x <= 0 then return 0 end
  return floor(x)
end

local function ceil0(x)
  if x <= 0 then return 0 end
  return ceil(x)
end

-- `SET key value` expiring `ms` milliseconds from now (at least 1).
local function set_px(key, value, ms)
  local ttl = ceil0(ms)
  if ttl < 1 then ttl = 1 end
  call('SET', key, value, 'PX', ttl)
end

local function gcra(key, cost)
  local tat, expires = now, 0
  local stored = call('GET', key)
  if stored then
    local tag, stored_tat, stored_expires
    if #stored == 17 then tag, stored_tat, stored_expires = unpack('<Bdd', stored) end
    if tag == G then
      expires = stored_expires
      if stored_tat > now then tat = stored_tat end
    else
      local text = tonumber(stored)
      if text and text > now then tat = text end
    end
  end
  local new_tat = tat + interval * cost
  local allow_at = new_tat - burst_span
  if now < allow_at then
    return -1 - floor0((now - (tat - burst_span)) / interval), ceil0(allow_at - now),
      ceil0(tat - now)
  end
  if new_tat <= expires then
    -- The expiry stays: only the arrival time is overwritten.
    call('SETRANGE', key, '1', pack('<d', new_tat))
  else
    local ttl = ceil0((new_tat + burst_span - now) / 1000)
    if ttl < 1 then ttl = 1 end
    -- Redis counts the expiry from its clock in whole milliseconds.
    expires = (floor(now / 1000) + ttl) * 1000
    call('SET', key, pack('<Bdd', G, new_tat, expires), 'PX', ttl)
  end
  -- Both are at least 0 here (now >= allow_at, new_tat >= now). Redis truncates a
  -- number it answers, which for one at least 0 is floor: no call needed.
  return (now - allow_at) / interval, 0, ceil(new_tat - now)
end

-- The counts of `window` and of the window before it (0 when the stored state is older),
-- and whether the stored state is `window`'s in the packed layout (its expiry is then
-- already right, and its numbers can be overwritten in place).
local function counts(key, tag, window)
  local stored = call('GET', key)
  if not stored then return 0, 0, false end
  local w, n, p
  if byte(stored) == tag then
    if tag == F and #stored == 17 then
      w, n = unpack('<dd', stored, 2)
    elseif tag == S and #stored == 25 then
      w, n, p = unpack('<ddd', stored, 2)
    end
    if w == window then return n, p or 0, true end
  end
  if not w then
    w, n, p = string.match(stored, '^(%d+) (%d+) ?(%d*)$')
    w, n, p = tonumber(w), tonumber(n), tonumber(p)
  end
  if w == window then return n, p or 0, false end
  if w == window - 1 then return 0, n, false end
  return 0, 0, false
end

local function fixed(key, cost)
  local window = floor(now / period)
  local reset = ceil0((window + 1) * period - now)
  local count, _, current = counts(key, F, window)
  if count + cost > limit then
    return -1 - floor0(limit - count), reset, reset
  end
  if current then
    -- Same window: only the count (after the tag and the window) is overwritten.
    call('SETRANGE', key, '9', pack('<d', count + cost))
  else
    set_px(key, pack('<Bdd', F, window, count + cost), reset / 1000)
  end
  return limit - (count + cost), 0, reset
end

local function sliding(key, cost)
  local window = floor(now / period)
  local elapsed = now - window * period
  local curr, prev, current = counts(key, S, window)
  local estimated = prev * (period - elapsed) / period + curr
  if estimated + cost > limit then
    local room = limit - curr - cost
    local retry
    if room >= 0 then
      retry = floor(period - room * period / prev - elapsed) + 1
    else
      local wait = period - (limit - cost) * period / curr
      local extra = 0
      if wait > 0 then extra = floor(wait) + 1 end
      retry = period - elapsed + extra
    end
    local reset
    if curr > 0 then reset = 2 * period - elapsed else reset = period - elapsed end
    retry = ceil0(retry)
    if retry < 1 then retry = 1 end
    return -1 - floor0(limit - estimated), retry, ceil0(reset)
  end
  -- Kept until the next window ends: it is that window's previous count.
  if current then
    call('SETRANGE', key, '9', pack('<d', curr + cost))
  else
    set_px(key, pack('<Bddd', S, window, curr + cost, prev), (2 * period - elapsed) / 1000)
  end
  return floor0(limit - (estimated + cost)), 0, ceil0(2 * period - elapsed)
end

-- Each spec is unpacked once per call; consecutive checks of one rule and cost (comparing
-- interned strings) skip even the lookup.
local rules = {}
local out = {}
local n = 0
local spec, algorithm, cost
for i = 1, #KEYS do
  if ARGV[i] ~= spec then
    spec = ARGV[i]
    local rule = rules[spec]
    if not rule then
      local a, l, p, b, c = unpack('<Bdddd', spec)
      if a == G then a = gcra elseif a == F then a = fixed else a = sliding end
      rule = {a, l, p, p / l, b * (p / l), c}
      rules[spec] = rule
    end
    algorithm, limit, period, interval, burst_span, cost =
      rule[1], rule[2], rule[3], rule[4], rule[5], rule[6]
  end
  local remaining, retry, reset = algorithm(KEYS[i], cost)
  if remaining >= 0 then
    out[n + 1], out[n + 2] = remaining, reset
    n = n + 2
  else
    out[n + 1], out[n + 2], out[n + 3] = remaining, retry, reset
    n = n + 3
  end
end
return out
