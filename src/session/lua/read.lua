-- Reads a session, renewing its idle timeout when asked.
-- KEYS: session
-- ARGV: id, touch (1 or 0)
-- Returns: {'ok', '0', session...} or {'missing'}
local now = now_ms()
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  renew(KEYS[1], now)
end
local out = {'ok', '0'}
if not load(out, KEYS[1], ARGV[1], now) then
  return {'missing'}
end
return out
