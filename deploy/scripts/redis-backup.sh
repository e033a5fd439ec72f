#!/usr/bin/env bash
# Redis backup and restore runbook.
#   backup:  BGSAVE on the current master (asked from Sentinel), wait until it finished,
#            copy dump.rdb out of the pod, write a checksum beside it.
#   restore: stop every Redis node, make the RDB the base of a fresh append-only file on
#            node 0's volume (Redis runs with appendonly yes and would otherwise start
#            empty; see lib/redis-restore-volume.sh), start node 0 first so it becomes
#            master, replicas resync from it.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$SCRIPT_DIR/lib/common.sh"

NAMESPACE=${BLINKCHAMBER_DB_NAMESPACE:-database}
MASTER_SET=mymaster
STATEFULSET=redis-node
DIRECT=""          # HOST:PORT: use the local redis-cli instead of kubectl exec
PASSWORD_FILE=${REDIS_PASSWORD_FILE:-}
RESTORE_IMAGE=${RESTORE_IMAGE:-busybox:1.36}
POLL_INTERVAL=${BACKUP_POLL_INTERVAL:-1}
POLL_TIMEOUT=${BACKUP_TIMEOUT:-600}
RUNBOOK_OPTIONS=(   # read by runbook_main() in lib/common.sh, which adds -n, -y and -h
  "--master-set MASTER_SET"
  "--statefulset STATEFULSET"
  "${RUNBOOK_DIRECT_OPTIONS[@]}"
)

usage() {
  cat <<USAGE
Usage: ${0##*/} [options] backup [FILE] | restore FILE | help

  backup [FILE]   BGSAVE on the master and copy dump.rdb to FILE
                  (default: ./backups/redis-<UTC time>.rdb)
  restore FILE    replace the whole dataset with FILE (stops Redis; asks first)

Options:
  -n, --namespace NS      namespace of Redis (default: database)
      --master-set NAME   Sentinel master name (default: mymaster)
      --statefulset NAME  StatefulSet of the Redis nodes (default: redis-node)
      --direct HOST:PORT  backup through the local redis-cli (e.g. a port-forward to the master)
      --password-file F   password for --direct (default: \$REDIS_PASSWORD_FILE or \$REDISCLI_AUTH)
  -y, --yes               restore without asking
USAGE
}

# redis_in POD ARGS...: redis-cli inside a Redis pod, authenticated with the pod's own password file.
redis_in() {
  local pod=$1
  shift
  # shellcheck disable=SC2016  # expanded by the shell inside the pod
  kubectl exec --namespace "$NAMESPACE" "$pod" -c redis -- sh -c \
    'REDISCLI_AUTH="$(cat "${REDIS_PASSWORD_FILE:-/opt/bitnami/redis/secrets/redis-password}")" exec redis-cli --no-auth-warning "$@"' redis-cli "$@"
}

redis_direct() {
  redis-cli --no-auth-warning -h "${DIRECT%:*}" -p "${DIRECT##*:}" "$@"
}

# master_pod: the pod Sentinel currently names as master.
master_pod() {
  local addr host pod
  # shellcheck disable=SC2016  # expanded by the shell inside the pod
  addr=$(kubectl exec --namespace "$NAMESPACE" "$STATEFULSET-0" -c sentinel -- sh -c \
    'REDISCLI_AUTH="$(cat "${REDIS_PASSWORD_FILE:-/opt/bitnami/redis/secrets/redis-password}")" exec redis-cli --no-auth-warning -p 26379 SENTINEL get-master-addr-by-name "$1"' \
    redis-cli "$MASTER_SET") || die "$EXIT_UNREACHABLE" "cannot ask Sentinel for master '$MASTER_SET' in namespace '$NAMESPACE'"
  host=$(printf '%s\n' "$addr" | head -n 1)
  [ -n "$host" ] || die "$EXIT_FAILED" "Sentinel does not know master '$MASTER_SET'"
  if [[ "$host" =~ ^[0-9.]+$ ]]; then
    pod=$(kubectl get pods --namespace "$NAMESPACE" --field-selector "status.podIP=$host" -o jsonpath='{.items[0].metadata.name}')
  else
    pod=${host%%.*}
  fi
  [ -n "$pod" ] || die "$EXIT_FAILED" "no pod has the master address $host"
  printf '%s\n' "$pod"
}

# bgsave_and_wait RUNNER...: BGSAVE, then poll INFO persistence until no background save
# runs, and require that it succeeded. (LASTSAVE has a resolution of one second: a save
# finishing in the second Redis started, or saved last, would never be seen to move it.)
bgsave_and_wait() {
  local info waited=0
  "$@" BGSAVE >/dev/null
  while :; do
    info=$("$@" INFO persistence | tr -d '\r')
    if grep -q '^rdb_bgsave_in_progress:0' <<<"$info"; then
      grep -q '^rdb_last_bgsave_status:ok' <<<"$info" || die "$EXIT_FAILED" "BGSAVE failed (rdb_last_bgsave_status is not ok; see the Redis log)"
      return 0
    fi
    [ "$waited" -ge "$POLL_TIMEOUT" ] && die "$EXIT_FAILED" "BGSAVE did not finish within ${POLL_TIMEOUT}s"
    sleep "$POLL_INTERVAL"
    waited=$((waited + 1))
  done
}

cmd_backup() {
  local file=${1:-$(default_backup_file redis rdb)}
  mkdir -p "$(dirname "$file")"
  if [ -n "$DIRECT" ]; then
    direct_client REDISCLI_AUTH redis-cli
    log "BGSAVE on $DIRECT"
    bgsave_and_wait redis_direct
    redis_direct --rdb "$file" >/dev/null
  else
    require_tools kubectl
    require_cluster
    local pod
    pod=$(master_pod)
    log "BGSAVE on master $pod"
    bgsave_and_wait redis_in "$pod"
    kubectl cp --namespace "$NAMESPACE" -c redis "$pod:/data/dump.rdb" "$file" >/dev/null
  fi
  finish_backup "$file"
}

cmd_restore() {
  local file=$1
  [ -z "$DIRECT" ] || usage_error "restore works on the cluster only (it stops the StatefulSet); drop --direct"
  verify_backup "$file" REDIS
  require_tools kubectl
  require_cluster
  confirm_restore "Replace ALL Redis data in '$NAMESPACE' with '$file'? Redis is down during the restore."
  local replicas
  replicas=$(kubectl get statefulset "$STATEFULSET" --namespace "$NAMESPACE" -o jsonpath='{.spec.replicas}') ||
    die "$EXIT_FAILED" "StatefulSet '$STATEFULSET' not found in '$NAMESPACE'"
  log "stopping $STATEFULSET ($replicas nodes)"
  kubectl scale statefulset "$STATEFULSET" --namespace "$NAMESPACE" --replicas=0
  kubectl wait --namespace "$NAMESPACE" --for=delete pod -l app.kubernetes.io/name=redis --timeout=300s
  log "copying $file onto the volume of $STATEFULSET-0"
  local overrides
  overrides=$(printf '{"spec":{"securityContext":{"runAsUser":1001,"runAsGroup":1001,"fsGroup":1001},"containers":[{"name":"restore","image":"%s","command":["sleep","3600"],"volumeMounts":[{"name":"data","mountPath":"/data"}]}],"volumes":[{"name":"data","persistentVolumeClaim":{"claimName":"redis-data-%s-0"}}]}}' "$RESTORE_IMAGE" "$STATEFULSET")
  kubectl run redis-restore --namespace "$NAMESPACE" --image "$RESTORE_IMAGE" --restart=Never --overrides "$overrides"
  kubectl wait --namespace "$NAMESPACE" --for=condition=Ready pod/redis-restore --timeout=300s
  kubectl cp --namespace "$NAMESPACE" "$file" redis-restore:/data/restore.rdb
  kubectl exec -i --namespace "$NAMESPACE" redis-restore -- sh -s /data <"$SCRIPT_DIR/lib/redis-restore-volume.sh" ||
    die "$EXIT_FAILED" "preparing the volume failed; $STATEFULSET stays at 0 replicas (pod redis-restore kept for inspection)"
  kubectl delete pod redis-restore --namespace "$NAMESPACE" --wait
  log "starting $STATEFULSET-0 first (it loads the RDB and becomes master), then the rest"
  kubectl scale statefulset "$STATEFULSET" --namespace "$NAMESPACE" --replicas=1
  kubectl rollout status statefulset "$STATEFULSET" --namespace "$NAMESPACE" --timeout=600s
  kubectl scale statefulset "$STATEFULSET" --namespace "$NAMESPACE" --replicas="$replicas"
  kubectl rollout status statefulset "$STATEFULSET" --namespace "$NAMESPACE" --timeout=600s
  log "restore finished"
}

# runbook_check COMMAND: checks of the options, before any command.
runbook_check() {
  check_direct_address
}

runbook_main "$@"
