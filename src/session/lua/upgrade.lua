-- Reads a session stored by a release before the string layout, rewriting it in the
-- current layout (a plain GET of it answered WRONGTYPE).
-- KEYS: session
-- ARGV: (none)
-- Returns: the session's value, or nil.
return read(KEYS[1])
