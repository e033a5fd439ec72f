-- Rate-limit checks, mirroring src/ratelimit/algorithm.rs operation for operation.
--
-- KEYS[i]  the key of check i: {keyPrefix}{rule}:{key}, the only key it touches (GCRA: the
--          theoretical arrival time; fixed window: "<window> <count>"; sliding window:
--          "<window> <count> <previous window's count>").
-- ARGV     five values per check, in KEYS order:
--          algorithm ('g' gcra, 'f' fixedWindow, 's' slidingWindow), limit,
--          period in microseconds, burst (gcra), cost.
-- Returns  four integers per check: allowed (1/0), remaining, retry_after_us,
--          reset_after_us.
--
-- Time is Redis's own clock (TIME), read once, in microseconds since EPOCH, so every
-- instance checking the same key agrees whatever its local clock says.
--
-- Numbers go to redis.call as Lua numbers, not formatted strings: Redis writes them with
-- C's "%.17g" (exact, the same text string.format('%.17g') gave) without creating a Lua
-- string, which cost about a tenth of a check (INFO commandstats).

local EPOCH = 1735689600

local t = redis.call('TIME')
local now = (tonumber(t[1]) - EPOCH) * 1000000 + tonumber(t[2])

local function floor0(x)
  if x <= 0 then return 0 end
  return math.floor(x)
end

local function ceil0(x)
  if x <= 0 then return 0 end
  return math.ceil(x)
end

local function gcra(key, limit, period, burst, cost)
  local interval = period / limit
  local burst_span = burst * interval
  local tat = now
  local stored = tonumber(redis.call('GET', key))
  if stored and stored > now then tat = stored end
  local new_tat = tat + interval * cost
  local allow_at = new_tat - burst_span
  if now < allow_at then
    return 0, floor0((now - (tat - burst_span)) / interval), ceil0(allow_at - now),
      ceil0(tat - now)
  end
  local ttl = ceil0((new_tat - now) / 1000)
  if ttl < 1 then ttl = 1 end
  redis.call('SET', key, new_tat, 'PX', ttl)
  return 1, floor0((now - allow_at) / interval), 0, ceil0(new_tat - now)
end

-- The stored "<window> <count> [<previous count>]" of `key`: the counts of `window` and
-- of the window before it (0 when the stored state is older).
local function counts(key, window)
  local stored = redis.call('GET', key)
  if not stored then return 0, 0 end
  local w, n, p = string.match(stored, '^(%d+) (%d+) ?(%d*)$')
  w = tonumber(w)
  if w == window then return tonumber(n), tonumber(p) or 0 end
  if w == window - 1 then return 0, tonumber(n) end
  return 0, 0
end

local function fixed(key, limit, period, cost)
  local window = math.floor(now / period)
  local reset = ceil0((window + 1) * period - now)
  local count = counts(key, window)
  if count + cost > limit then
    return 0, floor0(limit - count), reset, reset
  end
  local ttl = ceil0(reset / 1000)
  if ttl < 1 then ttl = 1 end
  redis.call('SET', key, string.format('%.0f %.0f', window, count + cost), 'PX', ttl)
  return 1, limit - (count + cost), 0, reset
end

local function sliding(key, limit, period, cost)
  local window = math.floor(now / period)
  local elapsed = now - window * period
  local curr, prev = counts(key, window)
  local estimated = prev * (period - elapsed) / period + curr
  if estimated + cost > limit then
    local room = limit - curr - cost
    local retry
    if room >= 0 then
      retry = math.floor(period - room * period / prev - elapsed) + 1
    else
      local wait = period - (limit - cost) * period / curr
      local extra = 0
      if wait > 0 then extra = math.floor(wait) + 1 end
      retry = period - elapsed + extra
    end
    local reset
    if curr > 0 then reset = 2 * period - elapsed else reset = period - elapsed end
    retry = ceil0(retry)
    if retry < 1 then retry = 1 end
    return 0, floor0(limit - estimated), retry, ceil0(reset)
  end
  -- Kept until the next window ends: it is that window's previous count.
  local ttl = ceil0((2 * period - elapsed) / 1000)
  if ttl < 1 then ttl = 1 end
  redis.call('SET', key, string.format('%.0f %.0f %.0f', window, curr + cost, prev), 'PX',
    ttl)
  return 1, floor0(limit - (estimated + cost)), 0, ceil0(2 * period - elapsed)
end

local out = {}
for i = 1, #KEYS do
  local base = (i - 1) * 5
  local algorithm = ARGV[base + 1]
  local limit = tonumber(ARGV[base + 2])
  local period = tonumber(ARGV[base + 3])
  local burst = tonumber(ARGV[base + 4])
  local cost = tonumber(ARGV[base + 5])
  local allowed, remaining, retry, reset
  if algorithm == 'g' then
    allowed, remaining, retry, reset = gcra(KEYS[i], limit, period, burst, cost)
  elseif algorithm == 'f' then
    allowed, remaining, retry, reset = fixed(KEYS[i], limit, period, cost)
  else
    allowed, remaining, retry, reset = sliding(KEYS[i], limit, period, cost)
  end
  out[#out + 1] = allowed
  out[#out + 1] = remaining
  out[#out + 1] = retry
  out[#out + 1] = reset
end
return out
