-- Rate-limit checks, mirroring src/ratelimit/algorithm.rs operation for operation.
--
-- KEYS[i]    the key of check i: {keyPrefix}{rule}:{key}, the only key it touches.
-- ARGV[1]    the checks (1-based, as little-endian u32s) whose key an earlier check of the
--            same call has: they read their key again, as the earlier one may have written
--            it. Every other check's value comes from one MGET of all the keys, read before
--            any check is decided, which costs Redis about 1.2 k instructions less per
--            check than a GET of its own.
-- ARGV[i+1]  check i's rule and cost, packed: the algorithm's tag byte ('G' gcra, 'F'
--            fixedWindow, 'S' slidingWindow, as in stored values), then the limit, the
--            period (µs), the burst (GCRA's) and the cost as little-endian doubles. One
--            argument per check, as each costs Redis about 1 k instructions; a spec is
--            unpacked once per call however many checks share it. Packed, because reading
--            the same numbers from text (string.match, tonumber) cost about 11 k per call.
-- Returns    one string: per check, three little-endian doubles, unrounded: remaining,
--            retry_after_us and reset_after_us. retry_after_us is 0 for an admitted check and
--            above 0 for a limited one. The caller rounds them as algorithm.rs does (floor
--            for remaining, ceil for the times), so the script calls no rounding function,
--            and one string costs Redis less than the integers it replaces.
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
-- a TTL is formatted only when the expiry has to move: once per window, and for GCRA when
-- the arrival time passes the expiry, which is then set one burst span beyond it. Values in
-- the text layout of earlier releases ("<tat>", "<window> <count> [<previous>]") are still
-- read, and rewritten packed. A key MGET found empty is written with SET … GET, which
-- refuses, as GET would, a key of another type rather than replace it (MGET answers such a
-- key as empty).
--
-- GCRA, the default, runs inline in the loop. The window algorithms are made only for a
-- call that has a window rule (make_windows): making a function that refers to the
-- script's locals costs Redis about 3 k instructions a call, used or not. Functions used
-- per check are locals, and so are KEYS and ARGV: a global lookup per use cost a few
-- percent.

local KEYS, ARGV = KEYS, ARGV
local EPOCH = 1735689600
local G, F, S = 71, 70, 83

-- Arithmetic reads TIME's two strings as numbers once each (tonumber would twice).
local t = redis.call('TIME')
local now = (t[1] - EPOCH) * 1000000 + t[2]
local call, pack, unpack, spread = redis.call, struct.pack, struct.unpack, unpack
local floor, ceil = math.floor, math.ceil

-- `SET key value PX ms` (at least 1 ms); with GET when the key was found empty, so that
-- a key of another type is refused. Shared with the windows as an argument.
local function set_px(key, value, ms, empty)
  local ttl = ceil(ms)
  if ttl < 1 then ttl = 1 end
  if empty then
    call('SET', key, value, 'PX', ttl, 'GET')
  else
    call('SET', key, value, 'PX', ttl)
  end
end

-- The window algorithms, for `now`: fixed(key, stored, cost, limit, period) and
-- sliding(…), each answering remaining, retry_after_us and reset_after_us. Everything
-- they use comes in as arguments, so making this function costs next to nothing.
local function make_windows(now, call, pack, unpack, set_px)
  local F, S = 70, 83
  local floor, byte, match, tonumber = math.floor, string.byte, string.match, tonumber

  -- The counts of `window` and of the window before it (0 when the stored state is
  -- older), and whether the stored state is `window`'s in the packed layout (its expiry
  -- is then already right, and its numbers can be overwritten in place).
  local function counts(stored, tag, window)
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
      w, n, p = match(stored, '^(%d+) (%d+) ?(%d*)$')
      w, n, p = tonumber(w), tonumber(n), tonumber(p)
    end
    if w == window then return n, p or 0, false end
    if w == window - 1 then return 0, n, false end
    return 0, 0, false
  end

  local function fixed(key, stored, cost, limit, period)
    local window = floor(now / period)
    local reset = (window + 1) * period - now
    local count, _, current = counts(stored, F, window)
    if count + cost > limit then
      return limit - count, reset, reset
    end
    if current then
      -- Same window: only the count (after the tag and the window) is overwritten.
      call('SETRANGE', key, '9', pack('<d', count + cost))
    else
      set_px(key, pack('<Bdd', F, window, count + cost), reset / 1000, not stored)
    end
    return limit - (count + cost), 0, reset
  end

  local function sliding(key, stored, cost, limit, period)
    local window = floor(now / period)
    local elapsed = now - window * period
    local curr, prev, current = counts(stored, S, window)
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
      -- At least 1 µs (algorithm.rs: ceil, then at least 1), and above 0 as a limited
      -- check's must be.
      if retry < 1 then retry = 1 end
      return limit - estimated, retry, reset
    end
    -- Kept until the next window ends: it is that window's previous count.
    if current then
      call('SETRANGE', key, '9', pack('<d', curr + cost))
    else
      set_px(key, pack('<Bddd', S, window, curr + cost, prev), (2 * period - elapsed) / 1000,
        not stored)
    end
    return limit - (estimated + cost), 0, 2 * period - elapsed
  end

  return fixed, sliding
end

-- Checks that read their key again (see ARGV[1]), and every key's value read up front.
local again = {}
local repeats = ARGV[1]
for j = 1, #repeats, 4 do again[unpack('<I4', repeats, j)] = true end
local values = call('MGET', spread(KEYS))

-- Each spec is unpacked once per call; consecutive checks of one rule and cost (comparing
-- interned strings) skip even the lookup. `inc` is GCRA's interval times the cost.
local rules, out, n = {}, {}, 0
local spec, algorithm, limit, period, interval, burst_span, cost, inc
local fixed, sliding
for i = 1, #KEYS do
  local this = ARGV[i + 1]
  if this ~= spec then
    spec = this
    local rule = rules[spec]
    if not rule then
      local a, l, p, b, c = unpack('<Bdddd', spec)
      if a ~= G then
        if not fixed then fixed, sliding = make_windows(now, call, pack, unpack, set_px) end
        if a == F then a = fixed else a = sliding end
      end
      rule = {a, l, p, p / l, b * (p / l), c, (p / l) * c}
      rules[spec] = rule
    end
    algorithm, limit, period, interval, burst_span, cost, inc =
      rule[1], rule[2], rule[3], rule[4], rule[5], rule[6], rule[7]
  end
  local key = KEYS[i]
  local stored
  if again[i] then stored = call('GET', key) else stored = values[i] end
  if algorithm == G then
    local tat, expires = now, 0
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
    local new_tat = tat + inc
    local allow_at = new_tat - burst_span
    if now < allow_at then
      out[n + 1], out[n + 2], out[n + 3] =
        (now - (tat - burst_span)) / interval, allow_at - now, tat - now
    else
      if new_tat <= expires then
        -- The expiry stays: only the arrival time is overwritten.
        call('SETRANGE', key, '1', pack('<d', new_tat))
      else
        local ttl = ceil((new_tat + burst_span - now) / 1000)
        if ttl < 1 then ttl = 1 end
        -- Redis counts the expiry from its clock in whole milliseconds.
        expires = (floor(now / 1000) + ttl) * 1000
        set_px(key, pack('<Bdd', G, new_tat, expires), ttl, not stored)
      end
      out[n + 1], out[n + 2], out[n + 3] = (now - allow_at) / interval, 0, new_tat - now
    end
  else
    out[n + 1], out[n + 2], out[n + 3] = algorithm(key, stored, cost, limit, period)
  end
  n = n + 3
end
return pack('<' .. string.rep('d', n), spread(out))
