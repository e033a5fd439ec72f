#!/usr/bin/env bash
# Instructions Redis runs per rate-limit check, per lock cycle or per session update,
# counted by callgrind on a
# redis-server of its own: a figure that does not move with machine load, unlike the
# timings of `blinkchamber bench` on a shared machine. Use it to compare two versions of
# a script; `blinkchamber bench` stays the measure of speed.
#
#   scripts/script-cost.sh ratelimit [spec]   # default spec: GCRA, 1 000 000 per minute
#   scripts/script-cost.sh locks
#   scripts/script-cost.sh update             # session compare-and-set, ~220 bytes of data
#   scripts/script-cost.sh raw                # EVALSHA of a one-INCR script, per call
#
# Rate limits: calls of twenty-four checks over 2 000 keys, sixteen calls in flight (python3),
# as the bench's calls carry about that many with two calls in flight. Locks: twelve
# acquisitions of random names among 1 000 in one call, then their twelve releases
# (python3). Session updates: calls of twelve updates over 1 000 sessions, each at its
# current version (python3). Each starts with an unmeasured warm-up, so the keys exist as they would.
# Needs valgrind, redis-server, redis-cli, redis-benchmark and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:?usage: scripts/script-cost.sh ratelimit [spec] | locks | update | raw}
port=${SCRIPT_COST_PORT:-6399}
out=$(mktemp -d)
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$out"' EXIT

valgrind --tool=callgrind --callgrind-out-file="$out/cg.%p" \
  redis-server --port "$port" --save '' --appendonly no >/dev/null 2>&1 &
vpid=$!
until redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; do sleep 0.2; done
load() { redis-cli -p "$port" SCRIPT LOAD "$(cat "$1")"; }

# The Python drivers' connection to Redis: commands out, replies back (RESP2).
cat >"$out/resp.py" <<'EOF'
import socket, sys
def connect(port):
    global replies
    conn = socket.create_connection(('127.0.0.1', port))
    replies = conn.makefile('rb')
    return conn
def command(args):
    parts = [b'*%d\r\n' % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b'$%d\r\n%s\r\n' % (len(a), a))
    return b''.join(parts)
def reply():
    line = replies.readline()
    if line[:1] == b'-':
        sys.exit(line.decode().strip())
    if line[:1] == b'*':
        return [reply() for _ in range(int(line[1:]))]
    if line[:1] == b'$':
        return replies.read(int(line[1:]) + 2)[:-2] if int(line[1:]) >= 0 else None
    return int(line[1:]) if line[:1] == b':' else line
def pipelined(conn, batches, depth=16):
    # Sends each batch of commands at once, keeping at most `depth` replies unread.
    pending = 0
    for batch in batches:
        conn.sendall(b''.join(command(c) for c in batch))
        pending += len(batch)
        while pending > depth:
            reply()
            pending -= 1
    for _ in range(pending):
        reply()
EOF
py() { PYTHONPATH="$out" python3 - "$@"; }

case $what in
ratelimit)
  spec=${2:-g 1000000 60000000 1000000}
  sha=$(load src/ratelimit/check.lua)
  run() {
    py "$port" "$sha" "$1" "$spec" <<'EOF'
import random, struct, sys
from resp import connect, pipelined
port, sha, calls, spec = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4].split()
# The rule as src/ratelimit/algorithm.rs packs it, at a cost of 1.
rule = spec[0].upper().encode() + struct.pack('<dddd', *map(float, spec[1:]), 1.0)
rng, n = random.Random(1), 24
def call():
    keys = ['rl:%d' % rng.randrange(2000) for _ in range(n)]
    # The checks whose key an earlier check of the call has, as the batcher tells them.
    repeats = b''.join(struct.pack('<I', i + 1) for i in range(n) if keys[i] in keys[:i])
    return [['EVALSHA', sha, n] + keys + [repeats] + [rule] * n]
pipelined(connect(port), (call() for _ in range(calls)))
EOF
  }
  calls=1000 items=24 unit=check
  ;;
locks)
  sha=$(load src/lock/lua/leases.lua)
  run() {
    py "$port" "$sha" "$1" <<'EOF'
import random, sys
from resp import connect, pipelined
port, sha, calls = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rng, p = random.Random(1), 'blinkchamber:lock:'
def cycle():
    names = [rng.randrange(1000) for _ in range(12)]
    tokens = ['%032x' % rng.getrandbits(128) for _ in names]
    head = ['EVALSHA', sha, 13, p + 'fence'] + [p + 'lease:%d' % n for n in names]
    acquire = head + [p + 'released'] + [a for t in tokens for a in (t, 30000)]
    release = head + [p + 'released'] + [a for t in tokens for a in (t, '')]
    return [acquire, release]
pipelined(connect(port), (cycle() for _ in range(calls)))
EOF
  }
  calls=1000 items=12 unit=cycle
  ;;
update)
  sha=$(load src/session/lua/update.lua)
  run() {
    py "$port" "$sha" "$1" "$out/versions" <<'EOF'
import json, os, sys
from resp import command, connect, reply
port, sha, calls, state = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
conn = connect(port)
sessions, n = 1000, 12
field = lambda v: 's1 %020d' % v
data = json.dumps({'roles': ['viewer'], 'org': 'o-1', 'n': 0, 'note': 'x' * 150})
if os.path.exists(state):
    versions = json.load(open(state))
else:
    versions = [1] * sessions
    for i in range(sessions):
        head = ' %013d %013d %013d %013d u user-%d\n' % (
            1, 9999999999999, 1800000, 9999999999999, i % 100)
        conn.sendall(command(['SET', 'blinkchamber:session:s:%d' % i,
                              field(1) + head + data, 'PX', 3600000]))
        reply()
at = 0
for _ in range(calls):
    picked = [(at + j) % sessions for j in range(n)]
    at += n
    args = ['EVALSHA', sha, n] + ['blinkchamber:session:s:%d' % i for i in picked]
    for i in picked:
        args += [data, field(versions[i]), field(versions[i] + 1)]
        versions[i] += 1
    conn.sendall(command(args))
    if any(not isinstance(r, bytes) for r in reply()):
        sys.exit('an update was not applied')
json.dump(versions, open(state, 'w'))
EOF
  }
  calls=1000 items=12 unit=update
  ;;
raw)
  sha=$(redis-cli -p "$port" SCRIPT LOAD "return redis.call('INCR', KEYS[1])")
  run() { redis-benchmark -p "$port" -P 16 -c 1 -n "$1" -r 2000 EVALSHA "$sha" 1 'k:__rand_int__' >/dev/null; }
  calls=24000 items=1 unit=call
  ;;
*)
  echo "unknown: $what (ratelimit, locks, update or raw)" >&2
  exit 2
  ;;
esac

run $((calls / 2 + 1))
callgrind_control -z "$vpid" >/dev/null 2>&1
run "$calls"
callgrind_control -d "$vpid" >/dev/null 2>&1
redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
wait "$vpid" || true
total=$(grep -h '^totals:' "$out"/cg.*.1 | awk '{s += $2} END {print s}')
echo "$what: $((total / (calls * items))) instructions per $unit"
