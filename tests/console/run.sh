#!/usr/bin/env bash
# The browser test of the operator console (`/ui`, `server.console.enabled`).
#
# Headless Chromium (Debian's `chromium`, driven by playwright-core) signs in to the
# console of a live `serve` and checks that it shows what the `/v1` API answers, that its
# actions change what they say (dead letters replayed and deleted, sessions revoked, cache
# entries invalidated), that a read-only token sees no button that changes state and that a
# wrong token gets a clear message. Screenshots of every page land in
# target/console/screenshots/. A second part fills `serve` on the memory backend with
# 10 000 dead letters and prints how long each page takes from navigation to interactive
# (printed, not asserted).
#
# 1. `serve` on Redis, with a separate `blinkchamber worker` (started and stopped by the
#    test) delivering `console.*` events to webhooks at a closed loopback port, once: they
#    dead-letter at once.
# 2. `serve` on the memory backend (it runs the workers itself) for the timing part.
#
# Tools: `chromium` from the distribution packages and playwright-core from the npm
# registry into target/console-node (pinned), both installed when missing; `redis-server`
# must be installed (scripts/test.sh installs it). CONSOLE_SKIP_BUILD=1 uses the binary as
# it is instead of building it first.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tests/console

PLAYWRIGHT_VERSION=1.64.1

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if [ ! -x /usr/bin/chromium ] || ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  packages=()
  [ -x /usr/bin/chromium ] || packages+=(chromium)
  command -v node >/dev/null || packages+=(nodejs)
  command -v npm >/dev/null || packages+=(npm)
  echo "console: installing ${packages[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi

node_dir=$(realpath -m "${CONSOLE_NODE:-target/console-node}")
installed=$(node -p "try { require('$node_dir/node_modules/playwright-core/package.json').version } catch (e) { '' }")
if [ "$installed" != "$PLAYWRIGHT_VERSION" ]; then
  echo "console: installing playwright-core $PLAYWRIGHT_VERSION into $node_dir"
  mkdir -p "$node_dir"
  npm install --silent --no-save --no-package-lock --no-audit --no-fund \
    --prefix "$node_dir" "playwright-core@$PLAYWRIGHT_VERSION" >/dev/null
fi

if [ -z "${CONSOLE_SKIP_BUILD:-}" ]; then
  cargo build --locked -q
fi
# CONSOLE_BIN measures another build (the page timings of a release binary, say).
bin=$(realpath "${CONSOLE_BIN:-${CARGO_TARGET_DIR:-target}/debug/blinkchamber}")

out=$(realpath -m target/console)
rm -rf "$out/screenshots"
mkdir -p "$out/screenshots"

label=console
# shellcheck source=tests/support/processes.sh
source tests/support/processes.sh

full_token=console-full-$RANDOM$RANDOM$RANDOM
ro_token=console-read-$RANDOM$RANDOM$RANDOM
echo "$full_token" >"$work/full-tokens"
echo "$ro_token" >"$work/ro-tokens"

start_redis

# Nothing listens there: every webhook delivery is refused, so with `maxRetries: 0` an
# event is dead-lettered on its first attempt.
closed_port=$(free_port)

# config NAME BACKEND: writes $work/NAME.yaml (a listen and metrics port of its own).
config() {
  local name=$1 backend=$2
  {
    echo "backend: $backend"
    if [ "$backend" = redis ]; then
      printf 'redis:\n  host: 127.0.0.1\n  port: %s\n' "$redis_port"
    fi
    cat <<EOF
server:
  listen: 127.0.0.1:$(free_port)
  metricsListen: 127.0.0.1:$(free_port)
  console: { enabled: true }
  auth:
    tokens: { valueFromFile: $work/full-tokens }
    readOnlyTokens: { valueFromFile: $work/ro-tokens }
doctor: { interval: 0s }
rateLimit:
  rules:
    - { name: login, descriptor: [ip], algorithm: gcra, limit: 10, period: 1m, burst: 5, failureMode: closed }
    - { name: api-per-user, descriptor: [user, route], algorithm: slidingWindow, limit: 1000, period: 1h }
    - { name: quota, descriptor: [org], algorithm: fixedWindow, limit: 1000000, period: 720h }
events:
  enabled: true
  types: []
  consumer: { maxRetries: 0, retryDelay: 10ms, lease: 10s }
  performance: { workerCount: 2, flushInterval: 100ms }
  sinks:
    log: false
    webhooks:
      - { match: "console.failed", url: "http://127.0.0.1:$closed_port/failed-hook", timeout: 2s }
      - { match: "console.other", url: "http://127.0.0.1:$closed_port/other-hook", timeout: 2s }
EOF
  } >"$work/$name.yaml"
}

config redis redis
config worker redis # the same queues and sinks; metrics on a port of its own
config memory memory
serve redis
redis_url=$base
serve memory
memory_url=$base

status=0
CONSOLE_NODE_DIR="$node_dir" \
  CONSOLE_REDIS_URL="$redis_url" \
  CONSOLE_MEMORY_URL="$memory_url" \
  CONSOLE_TOKEN="$full_token" \
  CONSOLE_RO_TOKEN="$ro_token" \
  CONSOLE_BIN="$bin" \
  CONSOLE_WORKER_CONFIG="$work/worker.yaml" \
  CONSOLE_WORKER_LOG="$work/worker.log" \
  CONSOLE_SCREENSHOTS="$out/screenshots" \
  node "$here/console.mjs" || status=$?

if [ "$status" -ne 0 ]; then
  for log in redis memory worker; do
    if [ -s "$work/$log.log" ]; then
      echo "console: last lines of the $log log:"
      tail -15 "$work/$log.log" | sed 's/^/  /'
    fi
  done
  echo "console: FAIL (screenshots in $out/screenshots)"
  exit 1
fi
echo "console: PASS (screenshots in $out/screenshots)"
