#!/usr/bin/env bash
# PostgreSQL backup and restore runbook (pg_dump custom format / pg_restore).
#   backup:  pg_dump -Fc of one database, taken on a PostgreSQL node (a standby is fine:
#            the dump is a consistent snapshot) and streamed to a local file + checksum.
#   restore: pg_restore --clean --if-exists on the current primary (asks first).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$SCRIPT_DIR/lib/common.sh"

NAMESPACE=${BLINKCHAMBER_DB_NAMESPACE:-database}
STATEFULSET=postgresql-ha-postgresql
DATABASE=zitadel
DB_USER=postgres
DIRECT=""          # HOST:PORT: use the local pg_dump / pg_restore
PASSWORD_FILE=${PGPASSWORD_FILE:-}
RUNBOOK_OPTIONS=(   # read by runbook_main() in lib/common.sh, which adds -n, -y and -h
  "-d --database DATABASE"
  "-U --user DB_USER"
  "--statefulset STATEFULSET"
  "${RUNBOOK_DIRECT_OPTIONS[@]}"
)

usage() {
  cat <<USAGE
Usage: ${0##*/} [options] backup [FILE] | restore FILE | help

  backup [FILE]   pg_dump -Fc of the database to FILE (default: ./backups/postgres-<db>-<UTC time>.dump)
  restore FILE    pg_restore --clean --if-exists FILE into the database on the primary (asks first)

Options:
  -n, --namespace NS      namespace of PostgreSQL (default: database)
  -d, --database NAME     database (default: zitadel)
  -U, --user NAME         database user (default: postgres)
      --statefulset NAME  StatefulSet of the PostgreSQL nodes (default: postgresql-ha-postgresql)
      --direct HOST:PORT  use the local pg_dump/pg_restore (e.g. through a port-forward)
      --password-file F   password for --direct (default: \$PGPASSWORD_FILE or \$PGPASSWORD)
  -y, --yes               restore without asking
USAGE
}

# pg_in POD TOOL ARGS...: a PostgreSQL client tool inside a node, password from the pod's file.
pg_in() {
  local pod=$1
  shift
  # shellcheck disable=SC2016  # expanded by the shell inside the pod
  kubectl exec -i --namespace "$NAMESPACE" "$pod" -c postgresql -- sh -c \
    'PGPASSWORD="$(cat "${POSTGRES_PASSWORD_FILE:-/opt/bitnami/postgresql/secrets/password}")" exec "$@"' pg "$@"
}

primary_pod() {
  local pods pod state
  pods=$(kubectl get pods --namespace "$NAMESPACE" -l app.kubernetes.io/name=postgresql-ha,app.kubernetes.io/component=postgresql \
    -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
  [ -n "$pods" ] || die "$EXIT_UNREACHABLE" "no PostgreSQL pods in namespace '$NAMESPACE'"
  for pod in $pods; do
    state=$(pg_in "$pod" psql -h 127.0.0.1 -U "$DB_USER" -d postgres -tAc 'SELECT pg_is_in_recovery()' </dev/null 2>/dev/null || true)
    if [ "$state" = f ]; then
      printf '%s\n' "$pod"
      return 0
    fi
  done
  die "$EXIT_FAILED" "no primary found among: ${pods//$'\n'/ }"
}

cmd_backup() {
  local file=${1:-$(default_backup_file "postgres-$DATABASE" dump)}
  mkdir -p "$(dirname "$file")"
  if [ -n "$DIRECT" ]; then
    direct_client PGPASSWORD pg_dump
    log "pg_dump $DATABASE from $DIRECT"
    pg_dump -Fc -h "${DIRECT%:*}" -p "${DIRECT##*:}" -U "$DB_USER" -d "$DATABASE" -f "$file" ||
      die "$EXIT_FAILED" "pg_dump failed"
  else
    require_tools kubectl
    require_cluster
    log "pg_dump $DATABASE on $STATEFULSET-0"
    pg_in "$STATEFULSET-0" pg_dump -Fc -h 127.0.0.1 -U "$DB_USER" -d "$DATABASE" </dev/null >"$file" ||
      die "$EXIT_FAILED" "pg_dump failed"
  fi
  finish_backup "$file"
}

cmd_restore() {
  local file=$1
  verify_backup "$file" PGDMP
  if [ -n "$DIRECT" ]; then
    direct_client PGPASSWORD pg_restore
  else
    require_tools kubectl
    require_cluster
  fi
  confirm_restore "Replace the contents of database '$DATABASE' with '$file'?"
  if [ -n "$DIRECT" ]; then
    pg_restore --clean --if-exists --no-owner -h "${DIRECT%:*}" -p "${DIRECT##*:}" -U "$DB_USER" -d "$DATABASE" "$file" ||
      die "$EXIT_FAILED" "pg_restore failed"
  else
    local pod
    pod=$(primary_pod)
    log "pg_restore into $DATABASE on primary $pod"
    pg_in "$pod" pg_restore --clean --if-exists --no-owner -h 127.0.0.1 -U "$DB_USER" -d "$DATABASE" <"$file" ||
      die "$EXIT_FAILED" "pg_restore failed"
  fi
  log "restore finished"
}

# runbook_check COMMAND: checks of the options, before any command.
runbook_check() {
  [[ "$DATABASE" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || usage_error "invalid database name '$DATABASE'"
  check_direct_address
}

runbook_main "$@"
