#!/usr/bin/env bash
# The HTTP contract test: `/openapi.json` against what `blinkchamber serve` answers.
#
# 1. schemathesis, with every check and every phase (examples, coverage, fuzzing, and
#    stateful sequences that follow the document's links), against `serve` on the memory
#    backend and on Redis with every capability on, then against `serve` with the
#    optional capabilities switched off. Any failure fails the test.
# 2. A Python client generated from the document by openapi-python-client runs a short
#    scenario (cache, session, rate limit, event) against a live `serve`.
#
# Tools come from the Python package index into a virtualenv under target/ (pinned
# versions); `redis-server` must be installed (scripts/test.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tests/contract

SCHEMATHESIS_VERSION=4.32.5
CLIENT_GENERATOR_VERSION=0.29.1
# CONTRACT_EXAMPLES and CONTRACT_SEED make a deeper or different run than CI's.
EXAMPLES=${CONTRACT_EXAMPLES:-40}

venv=$(realpath -m "${CONTRACT_VENV:-target/contract-venv}")
if [ ! -x "$venv/bin/schemathesis" ] || [ ! -x "$venv/bin/openapi-python-client" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" \
    "openapi-python-client==$CLIENT_GENERATOR_VERSION"
fi

cargo build --locked -q
bin=${CARGO_TARGET_DIR:-target}/debug/blinkchamber

label=contract
# shellcheck source=tests/support/processes.sh
source tests/support/processes.sh

token=contract-token-$RANDOM$RANDOM
echo "$token" >"$work/api-token"
head -c 32 /dev/urandom | base64 >"$work/zitadel-key"
echo "issuer-secret" >"$work/issuer-secret"

issuer_port=$(free_port)
python3 "$here/issuer.py" "$issuer_port" &
pids+=($!)

start_redis

# config NAME BACKEND FEATURES: writes $work/NAME.yaml; FEATURES is `all` or `off`.
config() {
  local name=$1 backend=$2 features=$3 port
  port=$(free_port)
  {
    echo "backend: $backend"
    if [ "$backend" = redis ]; then
      printf 'redis:\n  host: 127.0.0.1\n  port: %s\n' "$redis_port"
    fi
    cat <<EOF
server:
  listen: 127.0.0.1:$port
  metricsListen: 127.0.0.1:$(free_port)
  auth:
    tokens: { valueFromFile: $work/api-token }
rateLimit:
  rules:
    - { name: login, descriptor: [ip], algorithm: gcra, limit: 10, period: 1m, burst: 5 }
    - { name: api-per-user, descriptor: [user, route], algorithm: slidingWindow, limit: 1000, period: 1h }
    - { name: quota, descriptor: [org], limit: 1000000, period: 720h }
    - { name: own-api, descriptor: [ip], limit: 1000000, period: 1s }
  api:
    perIp: own-api
locks: { maxWait: 1s }
EOF
    if [ "$features" = all ]; then
      cat <<EOF
tokens:
  issuer: "http://127.0.0.1:$issuer_port"
  introspection:
    enabled: true
    clientId: contract
    clientSecret: { valueFromFile: $work/issuer-secret }
  jwt:
    enabled: true
    audiences: [contract]
events:
  enabled: true
  types: []
  zitadel:
    signingKey: { valueFromFile: $work/zitadel-key }
  sinks: { log: false }
EOF
    else
      echo "events: { enabled: false }"
    fi
  } >"$work/$name.yaml"
  echo "$port"
}

failed=0
schemathesis() {
  local label=$1 base=$2
  shift 2
  echo "contract: schemathesis against $label"
  if ! "$venv/bin/schemathesis" --config-file "$here/schemathesis.toml" run \
    "$base/openapi.json" --checks all --seed "${CONTRACT_SEED:-1}" --max-examples "$EXAMPLES" \
    -H "Authorization: Bearer $token" --no-color "$@" >"$work/st-$label.txt" 2>&1; then
    failed=1
    cat "$work/st-$label.txt"
    echo "contract: FAIL schemathesis against $label (server log: $(tail -5 "$work/$label.log"))"
  else
    sed -n '/= SUMMARY =/,$p' "$work/st-$label.txt" | grep -A1 -E "Tested|Test cases" || true
    echo "contract: PASS schemathesis against $label"
  fi
}

config memory memory all >/dev/null
config redis redis all >/dev/null
config off memory off >/dev/null
serve memory /healthz
memory=$base
serve redis /healthz
redis=$base
serve off /healthz
off=$base

schemathesis memory "$memory"
schemathesis redis "$redis"
schemathesis off "$off" --include-path-regex '^/v1/(tokens|events|ingest)' \
  --phases examples,coverage,fuzzing

echo "contract: generated Python client"
curl -fsS "$memory/openapi.json" >"$work/openapi.json"
(cd "$work" && "$venv/bin/openapi-python-client" generate --path openapi.json \
  --output-path client --meta setup >"$work/generate.log" 2>&1) || {
  cat "$work/generate.log"
  echo "contract: FAIL the client generator refused the document"
  exit 1
}
"$venv/bin/pip" install -q --disable-pip-version-check "$work/client" >/dev/null
if "$venv/bin/python" "$here/client_scenario.py" "$memory" "$token"; then
  echo "contract: PASS generated client scenario"
else
  echo "contract: FAIL generated client scenario"
  failed=1
fi

exit "$failed"
