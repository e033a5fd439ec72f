#!/usr/bin/env bash
# Backup and restore of Redis with AOF on, against a real redis-server:
# write keys, back up with redis-backup.sh (--direct), flush, stop Redis, prepare its data
# directory with PREPARE (default: the restore step redis-backup.sh runs in the helper pod,
# scripts/lib/redis-restore-volume.sh), start Redis again with appendonly yes and check
# every key came back.
#
# Usage: redis_roundtrip.sh WORK_DIR [PREPARE]
#   PREPARE is run as `PREPARE DATA_DIR` with the backup at DATA_DIR/restore.rdb.
# Exits 0 when every key is back, 1 otherwise (saying which), 3 without redis-server.
set -euo pipefail

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$1
prepare=${2:-$DEPLOY_DIR/scripts/lib/redis-restore-volume.sh}
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "redis-server and redis-cli are needed" >&2
  exit 3
fi

rm -rf "$work"
mkdir -p "$work/data" "$work/backups"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

start_redis() {
  # Bitnami's redis.conf: appendonly yes, RDB snapshots as well.
  redis-server --port "$port" --bind 127.0.0.1 --dir "$work/data" --appendonly yes \
    --appendfsync always --save "3600 1" --daemonize no >>"$work/redis.log" 2>&1 &
  pid=$!
  local i
  for i in $(seq 1 50); do
    redis-cli -p "$port" PING 2>/dev/null | grep -q PONG && return 0
    sleep 0.1
  done
  echo "redis-server did not start" >&2
  cat "$work/redis.log" >&2
  return 1
}

stop_redis() {
  redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  wait "$pid" 2>/dev/null || true
  pid=""
}

cli() { redis-cli -p "$port" "$@"; }

start_redis
for i in $(seq 1 100); do cli SET "key:$i" "value-$i" >/dev/null; done
cli HSET session:1 user alice role admin >/dev/null
cli RPUSH "zitadel:events:normal" e1 e2 e3 >/dev/null
want=$(cli DBSIZE)

# backup through the runbook itself
BACKUP_POLL_INTERVAL=0.1 bash "$DEPLOY_DIR/scripts/redis-backup.sh" --direct "127.0.0.1:$port" backup "$work/backups/redis.rdb"
[ -s "$work/backups/redis.rdb.sha256" ] || { echo "no checksum written" >&2; exit 1; }

# disaster: everything gone, and the AOF says so
cli FLUSHALL >/dev/null
cli SET after-backup 1 >/dev/null
stop_redis

# restore: what the runbook does to node 0's volume while Redis is down
cp "$work/backups/redis.rdb" "$work/data/restore.rdb"
"$prepare" "$work/data"

start_redis
got=$(cli DBSIZE)
echo "keys before backup: $want, after restore: $got"
[ "$got" = "$want" ] || { echo "restore lost data: $got of $want keys" >&2; exit 1; }
[ "$(cli GET key:42)" = value-42 ] || { echo "key:42 wrong" >&2; exit 1; }
[ "$(cli HGET session:1 role)" = admin ] || { echo "session:1 wrong" >&2; exit 1; }
[ "$(cli LLEN zitadel:events:normal)" = 3 ] || { echo "queue wrong" >&2; exit 1; }
[ "$(cli EXISTS after-backup)" = 0 ] || { echo "a key written after the backup survived" >&2; exit 1; }
[ "$(cli CONFIG GET appendonly | tail -n 1)" = yes ] || { echo "AOF is off after the restore" >&2; exit 1; }
# and it stays there across a restart (the AOF now holds it)
stop_redis
start_redis
[ "$(cli DBSIZE)" = "$want" ] || { echo "data gone after a second restart" >&2; exit 1; }
echo "round trip ok: $want keys"
