#!/usr/bin/env bash
# Vault backup and restore runbook (integrated Raft storage snapshots).
#   backup:  vault operator raft snapshot save, streamed out of vault-0 to a local file.
#   restore: vault operator raft snapshot restore (asks first). The snapshot carries the
#            keyring of the cluster it came from: unseal with that cluster's keys afterwards.
# The token comes from --token-file, the init keys file or $VAULT_TOKEN, and travels on
# stdin, never on a command line.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$SCRIPT_DIR/lib/common.sh"

NAMESPACE=${BLINKCHAMBER_NAMESPACE:-blinkchamber}
POD=vault-0
TOKEN_FILE=""
KEYS_FILE=${VAULT_KEYS_FILE:-}
DIRECT=0
RUNBOOK_OPTIONS=(   # read by runbook_main() in lib/common.sh, which adds -n, -y and -h
  "--pod POD"
  "--token-file TOKEN_FILE"
  "-k --keys-file KEYS_FILE"
  "--direct DIRECT=1"
)

usage() {
  cat <<USAGE
Usage: ${0##*/} [options] backup [FILE] | restore FILE | help

  backup [FILE]   Raft snapshot to FILE (default: ./backups/vault-<UTC time>.snap)
  restore FILE    restore the Raft snapshot FILE (asks first)

Options:
  -n, --namespace NS   namespace of Vault (default: blinkchamber)
      --pod NAME       Vault server pod (default: vault-0)
      --token-file F   file holding a token allowed to use sys/storage/raft/snapshot
  -k, --keys-file F    use the root token from vault-bootstrap.sh's keys file
      --direct         use the local vault CLI against \$VAULT_ADDR
  -y, --yes            restore without asking
USAGE
}

token() {
  if [ -n "$TOKEN_FILE" ]; then
    [ -r "$TOKEN_FILE" ] || usage_error "token file not readable: $TOKEN_FILE"
    tr -d '[:space:]' <"$TOKEN_FILE"
  elif [ -n "$KEYS_FILE" ]; then
    [ -r "$KEYS_FILE" ] || usage_error "keys file not readable: $KEYS_FILE"
    keys_file_root_token "$KEYS_FILE"
  elif [ -n "${VAULT_TOKEN:-}" ]; then
    printf '%s' "$VAULT_TOKEN"
  else
    usage_error "no token: pass --token-file, --keys-file or set VAULT_TOKEN"
  fi
}

# vault_in ARGS...: vault inside the pod; stdin = token line, then the caller's data.
vault_in() {
  # shellcheck disable=SC2016  # expanded by the shell inside the pod
  kubectl exec -i --namespace "$NAMESPACE" "$POD" -c vault -- \
    sh -c 'IFS= read -r VAULT_TOKEN; export VAULT_TOKEN; exec vault "$@"' vault "$@"
}

cmd_backup() {
  local file=${1:-$(default_backup_file vault snap)} tok
  mkdir -p "$(dirname "$file")"
  tok=$(token)
  if [ "$DIRECT" = 1 ]; then
    VAULT_TOKEN=$tok vault operator raft snapshot save "$file" || die "$EXIT_FAILED" "snapshot save failed"
  else
    require_cluster
    log "saving a Raft snapshot from $POD"
    printf '%s\n' "$tok" | vault_in operator raft snapshot save /dev/stdout >"$file" ||
      die "$EXIT_FAILED" "snapshot save failed"
  fi
  finish_backup "$file"
}

cmd_restore() {
  local file=$1 tok
  verify_backup "$file" ""
  tok=$(token)
  [ "$DIRECT" = 1 ] || require_cluster
  confirm_restore "Replace ALL Vault data with snapshot '$file'? Secrets written since it was taken are lost."
  if [ "$DIRECT" = 1 ]; then
    VAULT_TOKEN=$tok vault operator raft snapshot restore "$file" || die "$EXIT_FAILED" "snapshot restore failed"
  else
    { printf '%s\n' "$tok"; cat "$file"; } | vault_in operator raft snapshot restore /dev/stdin ||
      die "$EXIT_FAILED" "snapshot restore failed"
  fi
  log "restore finished; if the snapshot came from another cluster, unseal with its keys"
}

# runbook_check COMMAND: the client backup and restore talk through, checked before they run.
runbook_check() {
  case "$1" in
    backup | restore)
      if [ "$DIRECT" = 1 ]; then
        require_tools vault
        [ -n "${VAULT_ADDR:-}" ] || usage_error "--direct needs VAULT_ADDR"
      else
        require_tools kubectl
      fi
      ;;
  esac
}

runbook_main "$@"
