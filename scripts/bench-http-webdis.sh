#!/usr/bin/env bash
# The HTTP routes of `serve` beside Webdis, in interleaved rounds (docs/benchmark.md,
# "Over HTTP, beside Webdis").
#
# Each round drives Webdis `GET /GET/key`, `/healthz`, an authenticated L1 cache hit, a
# rate-limit check, a session read and an event publish with `wrk -t1 -c50` for
# ROUND_SECONDS each, one after the other; a route's ratio is taken against the same
# round's Webdis `GET` (and the L1 hit against the same round's `/healthz`), and the
# median of the rounds is printed. On a machine whose speed moves within minutes, this
# compares like with like.
#
# Usage: scripts/bench-http-webdis.sh [ROUNDS]   (default 5)
# Needs: wrk, webdis, redis-server on PATH; a built binary (BLINKCHAMBER, default
# target/release/blinkchamber). Ports: REDIS_PORT (6390), WEBDIS_PORT (7379),
# SERVE_PORT (8080), METRICS_PORT (9090); all on 127.0.0.1, all must be free.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-5}
ROUND_SECONDS=${ROUND_SECONDS:-3}
BIN=${BLINKCHAMBER:-target/release/blinkchamber}
REDIS_PORT=${REDIS_PORT:-6390}
WEBDIS_PORT=${WEBDIS_PORT:-7379}
SERVE_PORT=${SERVE_PORT:-8080}
METRICS_PORT=${METRICS_PORT:-9090}

for tool in wrk webdis redis-server redis-cli curl python3; do
  command -v "$tool" >/dev/null || { echo "bench-http-webdis: $tool is not installed" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "bench-http-webdis: no binary at $BIN (cargo build --release)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/token"
token=$(cat "$work/token")
cat >"$work/serve.yaml" <<EOF
backend: redis
redis: { host: 127.0.0.1, port: $REDIS_PORT }
server:
  listen: 127.0.0.1:$SERVE_PORT
  metricsListen: 127.0.0.1:$METRICS_PORT
  auth:
    tokens: { valueFromFile: $work/token }
rateLimit:
  rules:
    - { name: bench, descriptor: [user], limit: 1000000000, period: 1m }
events:
  enabled: true
  types: []
  sinks: { log: false }
EOF
cat >"$work/webdis.json" <<EOF
{"redis_host": "127.0.0.1", "redis_port": $REDIS_PORT, "http_host": "127.0.0.1",
 "http_port": $WEBDIS_PORT, "threads": 2, "pool_size": 20, "daemonize": false,
 "websockets": false, "database": 0, "verbosity": 1, "logfile": "$work/webdis.log"}
EOF
cat >"$work/check.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"rule":"bench","key":"u1"}'
wrk.headers["Content-Type"] = "application/json"
EOF
cat >"$work/publish.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"specversion":"1.0","source":"/bench","type":"user.created","data":{"userId":"u-000000000000000000","orgId":"o-00000000000000"}}'
wrk.headers["Content-Type"] = "application/json"
EOF

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --dir "$work" >/dev/null
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done
webdis "$work/webdis.json" & pids+=($!)
"$BIN" serve --config "$work/serve.yaml" >"$work/serve.log" 2>&1 & pids+=($!)
serve="http://127.0.0.1:$SERVE_PORT"
for _ in $(seq 100); do curl -sf "$serve/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "$serve/healthz" >/dev/null || { cat "$work/serve.log" >&2; exit 1; }
until curl -sf "http://127.0.0.1:$WEBDIS_PORT/PING" >/dev/null; do sleep 0.1; done

auth="Authorization: Bearer $token"
redis-cli -p "$REDIS_PORT" set key hello >/dev/null
curl -sf -X PUT -H "$auth" -H 'Content-Type: application/json' \
  "$serve/v1/cache/users/42" -d '{"value":{"name":"x"}}' >/dev/null
session=$(curl -sf -X POST -H "$auth" -H 'Content-Type: application/json' \
  "$serve/v1/sessions" -d '{"userId":"u1"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

rate() { wrk -t1 -c50 -d"${ROUND_SECONDS}s" "$@" | awk '/Requests\/sec/ {print $2}'; }
for round in $(seq "$ROUNDS"); do
  echo "round $round wget $(rate "http://127.0.0.1:$WEBDIS_PORT/GET/key")"
  echo "round $round healthz $(rate "$serve/healthz")"
  echo "round $round l1 $(rate -H "$auth" "$serve/v1/cache/users/42")"
  echo "round $round ratelimit $(rate -H "$auth" -s "$work/check.lua" "$serve/v1/ratelimit/check")"
  echo "round $round session $(rate -H "$auth" -H "Session-Id: $session" "$serve/v1/session")"
  echo "round $round publish $(rate -H "$auth" -s "$work/publish.lua" "$serve/v1/events")"
done | tee "$work/rounds" >&2

python3 - "$work/rounds" <<'EOF'
import collections, statistics, sys
rounds = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    _, n, route, rate = line.split()
    rounds[int(n)][route] = float(rate)
rounds = [rounds[n] for n in sorted(rounds)]
print("requests per second, median of %d rounds:" % len(rounds))
for route in rounds[0]:
    print(f"  {route:10} {statistics.median(r[route] for r in rounds):9.0f}")
print("ratios (each round against its own Webdis GET or /healthz): median, then per round")
for route, base in [("l1", "wget"), ("l1", "healthz"), ("ratelimit", "wget"),
                    ("session", "wget"), ("publish", "wget")]:
    ratios = [r[route] / r[base] for r in rounds]
    print(f"  {route:9} / {base:7} {statistics.median(ratios):.2f}   "
          + " ".join(f"{x:.2f}" for x in ratios))
EOF
