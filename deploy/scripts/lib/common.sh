#!/usr/bin/env bash
# Helpers shared by the deploy scripts: messages, exit codes, tool and cluster checks,
# confirmation prompts, and the backup files and command line of the backup runbooks.
# Sourced, never run.
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

# --- backup runbooks ------------------------------------------------------------
# postgres-backup.sh, redis-backup.sh and vault-backup.sh share one command line:
#   [options] backup [FILE] | restore FILE | help
# Common to all: -n/--namespace (sets NAMESPACE), -y/--yes, -h/--help. A runbook lists its
# own options in RUNBOOK_OPTIONS, one entry each:
#   "SPELLING... VARIABLE"        the option takes a value, stored in VARIABLE
#   "SPELLING... VARIABLE=VALUE"  a switch: VARIABLE is set to VALUE
# and defines usage, runbook_check COMMAND (its own checks of the options, run before any
# command), cmd_backup [FILE] and cmd_restore FILE.

# --direct HOST:PORT and --password-file F, for the runbooks that can use a local client
# (see check_direct_address and direct_client).
# shellcheck disable=SC2034  # used by the scripts that source this file
readonly RUNBOOK_DIRECT_OPTIONS=("--direct DIRECT" "--password-file PASSWORD_FILE")

# runbook_main ARGS...: parse the command line and run the command.
runbook_main() {
  local command="" args=() target
  export ASSUME_YES=0  # read by confirm()
  while [ "$#" -gt 0 ]; do
    case "$1" in
      -n | --namespace) [ "$#" -ge 2 ] || usage_error "$1 needs a value"; NAMESPACE=$2; shift 2 ;;
      -y | --yes) export ASSUME_YES=1; shift ;;
      -h | --help) command=help; shift ;;
      -*)
        target=$(runbook_option_target "$1") || usage_error "unknown option: $1"
        if [[ "$target" == *=* ]]; then
          printf -v "${target%%=*}" '%s' "${target#*=}"
          shift
        else
          [ "$#" -ge 2 ] || usage_error "$1 needs a value"
          printf -v "$target" '%s' "$2"
          shift 2
        fi
        ;;
      *) if [ -z "$command" ]; then command=$1; else args+=("$1"); fi; shift ;;
    esac
  done
  [ -n "$command" ] || usage_error "no command given"
  [ "${#args[@]}" -le 1 ] || usage_error "too many arguments"
  runbook_check "$command"
  case "$command" in
    backup) cmd_backup "${args[@]}" ;;
    restore)
      [ -n "${args[0]:-}" ] || usage_error "restore needs a FILE"
      cmd_restore "${args[0]}"
      ;;
    help) usage ;;
    *) usage_error "unknown command '$command'" ;;
  esac
}

# runbook_option_target OPTION: the VARIABLE or VARIABLE=VALUE RUNBOOK_OPTIONS gives
# OPTION; fails when OPTION is not one of them.
runbook_option_target() {
  local spec words i
  for spec in "${RUNBOOK_OPTIONS[@]}"; do
    read -ra words <<<"$spec"
    for ((i = 0; i < ${#words[@]} - 1; i++)); do
      if [ "${words[i]}" = "$1" ]; then
        printf '%s\n' "${words[-1]}"
        return 0
      fi
    done
  done
  return 1
}

# check_direct_address: --direct, when given, must be HOST:PORT (read from DIRECT).
check_direct_address() {
  if [ -n "$DIRECT" ] && ! [[ "$DIRECT" =~ ^[^:]+:[0-9]+$ ]]; then
    usage_error "--direct needs HOST:PORT, got '$DIRECT'"
  fi
}

# direct_client VARIABLE TOOL...: for --direct, the local TOOLs must be on PATH; the
# password of --password-file (PASSWORD_FILE, if set) is exported as VARIABLE, where the
# client reads it, so it never shows on a command line.
direct_client() {
  local variable=$1 password
  shift
  require_tools "$@"
  if [ -n "$PASSWORD_FILE" ]; then
    [ -r "$PASSWORD_FILE" ] || usage_error "password file not readable: $PASSWORD_FILE"
    password=$(cat "$PASSWORD_FILE")
    printf -v "$variable" '%s' "$password"
    export "${variable?}"
  fi
}

# confirm_restore QUESTION: go on only when confirmed; otherwise fail with nothing changed.
confirm_restore() {
  confirm "$1" || die "$EXIT_FAILED" "aborted; nothing was changed"
}
