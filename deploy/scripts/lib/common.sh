#!/usr/bin/env bash
# Helpers shared by the deploy scripts: messages, exit codes, tool and cluster checks,
# confirmation prompts. Sourced, never run.
#
# Exit codes: 0 ok, 1 operation failed or aborted, 2 bad usage, 3 missing tool,
# 4 cluster or service unreachable.

# shellcheck disable=SC2034  # constants used by the scripts that source this file
readonly EXIT_FAILED=1 EXIT_USAGE=2 EXIT_MISSING_TOOL=3 EXIT_UNREACHABLE=4

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }

# die CODE MESSAGE...
die() {
  local code=$1
  shift
  printf 'error: %s\n' "$*" >&2
  exit "$code"
}

usage_error() {
  printf 'error: %s\n' "$*" >&2
  printf "Run '%s help' for usage.\n" "${0##*/}" >&2
  exit "$EXIT_USAGE"
}

# require_tools TOOL... : fail with one clear message naming every missing tool.
require_tools() {
  local missing=() tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    die "$EXIT_MISSING_TOOL" "required tool(s) not found on PATH: ${missing[*]}"
  fi
}

# require_cluster: the current kubectl context must answer.
require_cluster() {
  if ! kubectl cluster-info --request-timeout=10s >/dev/null 2>&1; then
    local ctx
    ctx=$(kubectl config current-context 2>/dev/null || echo "<none>")
    die "$EXIT_UNREACHABLE" "cannot reach the Kubernetes cluster (kubectl context: $ctx); check KUBECONFIG and that the cluster is running"
  fi
}

# confirm QUESTION: true when ASSUME_YES=1 or the user types "yes". Without a terminal
# and without --yes the answer is no, so nothing destructive happens unattended.
confirm() {
  if [ "${ASSUME_YES:-0}" = 1 ]; then
    return 0
  fi
  if [ ! -t 0 ] && [ "${CONFIRM_FROM_STDIN:-0}" != 1 ]; then
    warn "no terminal to ask: $1 (pass --yes to confirm)"
    return 1
  fi
  local answer
  printf '%s Type "yes" to continue: ' "$1" >&2
  IFS= read -r answer || answer=""
  [ "$answer" = yes ]
}

# make_private_tmpdir: sets PRIVATE_TMP to a directory only we can read, removed on exit.
# Called directly (not in $(...)) so the trap belongs to the script's own shell.
make_private_tmpdir() {
  PRIVATE_TMP=$(umask 077 && mktemp -d "${TMPDIR:-/tmp}/blinkchamber.XXXXXX")
  # shellcheck disable=SC2064  # expand now: the path is fixed
  trap "rm -rf '$PRIVATE_TMP'" EXIT
}

# random_secret [LENGTH]: alphanumeric, safe inside JSON and shell words.
random_secret() {
  local len=${1:-32} out=""
  while [ "${#out}" -lt "$len" ]; do
    out+=$(head -c 256 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9')
  done
  printf '%s' "${out:0:len}"
}

# keys_file_root_token FILE: the root token saved by `vault operator init -format=json`.
keys_file_root_token() {
  sed -n 's/^[[:space:]]*"root_token":[[:space:]]*"\([^"]*\)".*/\1/p' "$1" | head -n 1
}

# default_backup_file PREFIX EXT: ./backups/PREFIX-YYYYmmddTHHMMSSZ.EXT
default_backup_file() {
  printf '%s/%s-%s.%s\n' "${BACKUP_DIR:-./backups}" "$1" "$(date -u +%Y%m%dT%H%M%SZ)" "$2"
}

# finish_backup FILE: refuse an empty result, write FILE.sha256 beside it.
finish_backup() {
  [ -s "$1" ] || die "$EXIT_FAILED" "backup file '$1' is empty; the backup failed"
  (cd "$(dirname "$1")" && sha256sum "$(basename "$1")" >"$(basename "$1").sha256")
  log "backup written: $1 ($(wc -c <"$1" | tr -d ' ') bytes, checksum in $1.sha256)"
}

# verify_backup FILE MAGIC: the file exists, matches its checksum if one is beside it,
# and starts with MAGIC (the format's header).
verify_backup() {
  local file=$1 magic=$2
  [ -s "$file" ] || die "$EXIT_FAILED" "backup file '$file' not found or empty"
  if [ -f "$file.sha256" ]; then
    (cd "$(dirname "$file")" && sha256sum --quiet -c "$(basename "$file").sha256") ||
      die "$EXIT_FAILED" "checksum mismatch for '$file'"
  fi
  if [ -n "$magic" ] && [ "$(head -c "${#magic}" "$file")" != "$magic" ]; then
    die "$EXIT_FAILED" "'$file' does not look like the expected backup (no $magic header)"
  fi
}
