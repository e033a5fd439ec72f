# shellcheck shell=bash
# Shared by the shell-driven tests (tests/contract/run.sh, tests/console/run.sh). Source it
# after setting `label` (the prefix of its messages). It gives:
# - `$work`, a scratch directory, and `pids`, the processes started there; both are gone
#   when the script exits;
# - `free_port`: a free loopback port;
# - `wait_for URL`: waits (up to 30 s) until URL answers;
# - `start_redis`: a scratch redis-server on a free port, its port in `$redis_port`;
# - `serve NAME [PATH]`: `$bin serve` with `$work/NAME.yaml` (whose `listen:` names the
#   port), its URL in `$base`, once PATH (default `/readyz`) answers.

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {
  local url=$1
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "${label:?}: $url did not come up" >&2
  return 1
}

# Not in a command substitution: its subshell would keep the pid from the cleanup.
start_redis() {
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$work" >"$work/redis.log" 2>&1 &
  pids+=($!)
}

# Not in a command substitution either: serve would outlive the test.
serve() {
  local name=$1 path=${2:-/readyz} port
  port=$(sed -n 's/^  listen: 127.0.0.1:\([0-9]*\)$/\1/p' "$work/$name.yaml")
  "${bin:?}" serve --config "$work/$name.yaml" >"$work/$name.log" 2>&1 &
  pids+=($!)
  base="http://127.0.0.1:$port"
  wait_for "$base$path"
}
