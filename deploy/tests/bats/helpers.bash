# Shared set-up for the script tests.
#
# Each test gets a private PATH made of fake tools (helm, kubectl, kind, docker, podman,
# vault, redis-cli, pg_dump, pg_restore, ...) plus links to the few system utilities the
# scripts use, so a real tool on the machine can never be reached. Every fake appends
# one line "NAME ARG ARG ..." to $CALLS and its stdin to $STDIN_LOG.

# shellcheck disable=SC2034  # used by the .bats files that load this one
SCRIPTS="$(cd "$BATS_TEST_DIRNAME/../../scripts" && pwd)"

setup() {
  TEST_TMP="$(mktemp -d "${BATS_TMPDIR:-/tmp}/deploy-test.XXXXXX")"
  FAKE_BIN="$TEST_TMP/fakes"
  SYS_BIN="$TEST_TMP/sys"
  CALLS="$TEST_TMP/calls.log"
  STDIN_LOG="$TEST_TMP/stdin.log"
  mkdir -p "$FAKE_BIN" "$SYS_BIN"
  : >"$CALLS"
  : >"$STDIN_LOG"
  local tool
  for tool in bash sh cat sed grep head tail tr mktemp rm mv cp chmod mkdir dirname basename \
    date sha256sum wc sleep env cut sort uniq ls touch stat printf; do
    ln -s "$(command -v "$tool")" "$SYS_BIN/$tool"
  done
  ORIG_PATH=$PATH
  export PATH="$FAKE_BIN:$SYS_BIN"
  export CALLS STDIN_LOG TEST_TMP
  export BACKUP_DIR="$TEST_TMP/backups"
  export BACKUP_POLL_INTERVAL=0
  unset BLINKCHAMBER_ENV BLINKCHAMBER_NAMESPACE VAULT_ADDR VAULT_TOKEN VAULT_KEYS_FILE REDISCLI_AUTH PGPASSWORD
  cd "$TEST_TMP" || return 1
}

teardown() {
  export PATH=$ORIG_PATH
  rm -rf "$TEST_TMP"
}

# The fakes are generated code: the single-quoted $ expressions are meant for them.
# shellcheck disable=SC2016
# fake NAME [BODY]: install a fake tool. BODY is bash run after the call is recorded; it
# sees the arguments as "$@". Like the real tools, a fake reads stdin only when told to:
# an argument "-i" or "-" (kubectl exec -i, vault ... -) or a call to capture_stdin in
# BODY; what it read is in "$FAKE_STDIN" and appended to $STDIN_LOG. Default: exit 0.
fake() {
  local name=$1 body=${2:-}
  {
    printf '#!%s\n' "$(command -v bash)"
    # one write per call, so the two ends of a pipeline never interleave their lines
    printf 'line="%s"; for a in "$@"; do line+=" $a"; done; printf "%%s\\n" "$line" >>"$CALLS"\n' "$name"
    printf 'FAKE_STDIN=""\n'
    printf 'capture_stdin() { FAKE_STDIN=$(cat); printf "%%s\\n" "$FAKE_STDIN" >>"$STDIN_LOG"; }\n'
    printf 'for a in "$@"; do case "$a" in -i|-) capture_stdin; break ;; esac; done\n'
    printf '%s\n' "$body"
    printf 'exit 0\n'
  } >"$FAKE_BIN/$name"
  chmod +x "$FAKE_BIN/$name"
}

# A kubectl whose cluster answers; BODY handles the other calls.
fake_kubectl() {
  fake kubectl "$1"
}

# called PATTERN: some recorded call matches the extended regex.
called() {
  grep -Eq -- "$1" "$CALLS" || {
    echo "no call matches: $1" >&2
    echo "calls were:" >&2
    cat "$CALLS" >&2
    return 1
  }
}

not_called() {
  if grep -Eq -- "$1" "$CALLS"; then
    echo "unexpected call matching: $1" >&2
    cat "$CALLS" >&2
    return 1
  fi
}

# line_of PATTERN: line number of the first matching call (for ordering checks).
line_of() {
  grep -En -- "$1" "$CALLS" | head -n 1 | cut -d: -f1
}
