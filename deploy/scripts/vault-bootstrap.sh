#!/usr/bin/env bash
# Bring a freshly installed Vault into service for the platform: initialise, unseal,
# enable Kubernetes auth, load the policies and roles the chart rendered, create the
# secrets of PostgreSQL, Redis, ZITADEL and BlinkChamber, and project the ones the
# upstream charts read into Kubernetes Secrets.
#
# No secret is ever printed or put on a command line: tokens and values travel on stdin
# (kubectl exec -i / vault ... -), the unseal keys and root token go to --keys-file (0600).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$SCRIPT_DIR/lib/common.sh"

NAMESPACE=${BLINKCHAMBER_NAMESPACE:-blinkchamber}
DB_NAMESPACE=${BLINKCHAMBER_DB_NAMESPACE:-database}
KEYS_FILE=${VAULT_KEYS_FILE:-./vault-init.json}
KEY_SHARES=5
KEY_THRESHOLD=3
KV_MOUNT=secret
POLICY_CONFIGMAP=vault-policies
DIRECT=0   # 1: talk to $VAULT_ADDR with the local vault CLI instead of kubectl exec
ROTATE=0

usage() {
  cat <<USAGE
Usage: ${0##*/} [options] COMMAND

Commands (run in this order; 'all' runs them all and is safe to repeat):
  init       initialise Vault on vault-0; unseal keys + root token go to --keys-file (0600)
  unseal     unseal every Vault server with the keys from --keys-file
  auth       enable the Kubernetes auth method and KV v2 at secret/
  policies   write the policies and roles from ConfigMap vault-policies
  secrets    create missing secrets (postgres, redis, zitadel, blinkchamber) and project
             the ones the upstream charts read into Kubernetes Secrets
  all        init + unseal + auth + policies + secrets
  help       this text

Options:
  -n, --namespace NS     namespace of Vault and the release (default: blinkchamber)
      --db-namespace NS  namespace of PostgreSQL and Redis (default: database)
  -k, --keys-file FILE   where init writes / unseal reads the keys (default: ./vault-init.json)
      --key-shares N     unseal key shares (default: 5)
      --key-threshold N  shares needed to unseal (default: 3)
      --direct           use the local vault CLI against \$VAULT_ADDR (e.g. a port-forward)
      --rotate           secrets: replace the values that can change under a running
                         platform: the BlinkChamber API tokens (the binary re-reads the
                         file the Vault agent rewrites). Refused for the rest, with the
                         reason: the PostgreSQL and Redis passwords live in the servers
                         too (a new value in Vault alone locks everyone out), and the
                         ZITADEL masterkey is never rotated (it encrypts ZITADEL's data).
USAGE
}

# vault_run [--token] ARGS... : run the vault CLI, stdin passed through. With --token the
# root token is sent first on stdin and read into VAULT_TOKEN on the other side.
vault_run() {
  local with_token=0
  if [ "${1:-}" = --token ]; then with_token=1; shift; fi
  if [ "$DIRECT" = 1 ]; then
    if [ "$with_token" = 1 ]; then
      VAULT_TOKEN=$(root_token) vault "$@"
    else
      vault "$@"
    fi
  elif [ "$with_token" = 1 ]; then
    { root_token; printf '\n'; cat; } |
      kubectl exec -i --namespace "$NAMESPACE" "${VAULT_POD:-vault-0}" -c vault -- \
        sh -c 'IFS= read -r VAULT_TOKEN; export VAULT_TOKEN; exec vault "$@"' vault "$@"
  else
    kubectl exec -i --namespace "$NAMESPACE" "${VAULT_POD:-vault-0}" -c vault -- vault "$@"
  fi
}

require_keys_file() {
  [ -s "$KEYS_FILE" ] || die "$EXIT_FAILED" "keys file '$KEYS_FILE' not found or empty; run '${0##*/} init' first or pass --keys-file"
}

root_token() {
  require_keys_file
  keys_file_root_token "$KEYS_FILE"
}

unseal_keys() {
  require_keys_file
  sed -n '/"unseal_keys_b64"/,/\]/p' "$KEYS_FILE" | sed -n 's/^[[:space:]]*"\([^"]*\)",\{0,1\}[[:space:]]*$/\1/p'
}

vault_pods() {
  kubectl get pods --namespace "$NAMESPACE" -l app.kubernetes.io/name=vault,component=server \
    -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}'
}

is_initialized() {
  # `vault status` exits 2 when sealed; the JSON still says whether it is initialised.
  local out
  out=$(vault_run status -format=json 2>/dev/null </dev/null) || true
  grep -q '"initialized":[[:space:]]*true' <<<"$out"
}

cmd_init() {
  if is_initialized; then
    log "Vault is already initialised"
    return 0
  fi
  [ -e "$KEYS_FILE" ] && die "$EXIT_FAILED" "keys file '$KEYS_FILE' already exists; refusing to overwrite it"
  log "initialising Vault ($KEY_SHARES shares, threshold $KEY_THRESHOLD); keys go to $KEYS_FILE"
  local out
  out=$(umask 077 && mktemp "${KEYS_FILE}.XXXXXX")
  if ! vault_run operator init -format=json -key-shares="$KEY_SHARES" -key-threshold="$KEY_THRESHOLD" </dev/null >"$out"; then
    rm -f "$out"
    die "$EXIT_FAILED" "vault operator init failed"
  fi
  mv "$out" "$KEYS_FILE"
  chmod 600 "$KEYS_FILE"
  log "done. Store $KEYS_FILE offline; anyone holding it controls Vault."
}

cmd_unseal() {
  local keys pods pod key n=0
  keys=$(unseal_keys)
  [ -n "$keys" ] || die "$EXIT_FAILED" "no unseal keys found in '$KEYS_FILE'"
  if [ "$DIRECT" = 1 ]; then
    pods="direct"
  else
    pods=$(vault_pods)
    [ -n "$pods" ] || die "$EXIT_UNREACHABLE" "no Vault server pods found in namespace '$NAMESPACE'"
  fi
  for pod in $pods; do
    n=0
    log "unsealing $pod"
    while IFS= read -r key && [ "$n" -lt "$KEY_THRESHOLD" ]; do
      printf '%s\n' "$key" | VAULT_POD=$pod vault_run operator unseal >/dev/null ||
        die "$EXIT_FAILED" "unseal of $pod failed"
      n=$((n + 1))
    done <<<"$keys"
    [ "$n" -ge "$KEY_THRESHOLD" ] || die "$EXIT_FAILED" "only $n keys in '$KEYS_FILE', $KEY_THRESHOLD needed"
  done
}

# enable_once TYPE ARGS...: enable an auth method / secrets engine unless already there.
enable_once() {
  local kind=$1 out
  shift
  if ! out=$(vault_run --token "$kind" enable "$@" </dev/null 2>&1); then
    case "$out" in
      *"already in use"*) log "$kind $* already enabled" ;;
      *) printf '%s\n' "$out" >&2; die "$EXIT_FAILED" "vault $kind enable $* failed" ;;
    esac
  fi
}

cmd_auth() {
  enable_once secrets -path="$KV_MOUNT" kv-v2
  enable_once auth kubernetes
  vault_run --token write auth/kubernetes/config kubernetes_host=https://kubernetes.default.svc </dev/null >/dev/null
  log "Kubernetes auth configured"
}

configmap_key() {
  kubectl get configmap "$POLICY_CONFIGMAP" --namespace "$NAMESPACE" -o "jsonpath={.data.${1//./\\.}}"
}

cmd_policies() {
  local roles app
  roles=$(configmap_key roles) ||
    die "$EXIT_FAILED" "ConfigMap '$POLICY_CONFIGMAP' not found in '$NAMESPACE'; is the chart installed?"
  [ -n "$roles" ] || die "$EXIT_FAILED" "ConfigMap '$POLICY_CONFIGMAP' lists no roles"
  for app in $roles; do
    configmap_key "$app-policy.hcl" | vault_run --token policy write "$app-policy" - >/dev/null
    configmap_key "$app-role.json" | vault_run --token write "auth/kubernetes/role/$app" - >/dev/null
    log "policy $app-policy and role $app written"
  done
}

# secret_field PATH FIELD: current value, empty when missing (never printed).
secret_field() {
  vault_run --token kv get -field="$2" "$KV_MOUNT/$1" </dev/null 2>/dev/null || true
}

# Secrets --rotate may replace: a new value takes effect without touching a server.
ROTATABLE=(blinkchamber/api)

# rotate_refusal PATH: why --rotate leaves PATH alone (empty: it may rotate it).
rotate_refusal() {
  case "$1" in
    postgres) echo "the PostgreSQL passwords are also stored in the database (ALTER ROLE) and in pgpool's pool_passwd; change them there first, then in Vault, then re-run 'secrets' and restart pgpool and ZITADEL" ;;
    redis | blinkchamber/redis) echo "Redis and the Sentinels keep requirepass/masterauth; change them with CONFIG SET on every node and sentinel first, then in Vault, then re-run 'secrets'" ;;
    zitadel) echo "the ZITADEL masterkey encrypts ZITADEL's stored keys and secrets; a new one makes them unreadable, so it is never rotated" ;;
    *) local p
      for p in "${ROTATABLE[@]}"; do [ "$p" = "$1" ] && return 0; done
      echo "not known to be safe to rotate" ;;
  esac
}

# ensure_secret PATH KEY=VALUE...: write the secret unless it exists; with --rotate, replace
# it when rotate_refusal allows.
ensure_secret() {
  local path=$1 first json="{" sep="" why
  shift
  first=${1%%=*}
  if [ -n "$(secret_field "$path" "$first")" ]; then
    if [ "$ROTATE" = 0 ]; then
      log "secret $KV_MOUNT/$path exists, kept"
      return 0
    fi
    why=$(rotate_refusal "$path")
    if [ -n "$why" ]; then
      warn "not rotating $KV_MOUNT/$path: $why"
      return 0
    fi
    log "rotating $KV_MOUNT/$path"
  fi
  local kv
  for kv in "$@"; do
    json+="$sep\"${kv%%=*}\":\"${kv#*=}\""
    sep=","
  done
  printf '%s}' "$json" | vault_run --token kv put "$KV_MOUNT/$path" - >/dev/null
  log "secret $KV_MOUNT/$path written"
}

# copy_secret PATH KEY=VALUE...: write PATH (a copy of another secret) unconditionally.
copy_secret() {
  local path=$1 json="{" sep="" kv
  shift
  for kv in "$@"; do
    json+="$sep\"${kv%%=*}\":\"${kv#*=}\""
    sep=","
  done
  printf '%s}' "$json" | vault_run --token kv put "$KV_MOUNT/$path" - >/dev/null
  log "secret $KV_MOUNT/$path written"
}

# project NAMESPACE SECRET KEY=VAULTPATH#FIELD...: copy Vault values into a Kubernetes Secret
# through files in a private directory (values never on a command line).
project() {
  local ns=$1 name=$2 spec key src args=()
  shift 2
  for spec in "$@"; do
    key=${spec%%=*}
    src=${spec#*=}
    secret_field "${src%%#*}" "${src#*#}" >"$PRIVATE_TMP/$key"
    [ -s "$PRIVATE_TMP/$key" ] || die "$EXIT_FAILED" "Vault has no value for ${src}"
    args+=("--from-file=$key=$PRIVATE_TMP/$key")
  done
  kubectl create secret generic "$name" --namespace "$ns" "${args[@]}" --dry-run=client -o yaml |
    kubectl apply -f - >/dev/null
  rm -f "$PRIVATE_TMP"/*
  log "Kubernetes Secret $ns/$name updated from Vault"
}

cmd_secrets() {
  make_private_tmpdir
  ensure_secret postgres password="$(random_secret)" repmgrPassword="$(random_secret)" adminPassword="$(random_secret)" zitadelPassword="$(random_secret)"
  ensure_secret redis password="$(random_secret)"
  ensure_secret zitadel masterkey="$(random_secret 32)"
  # BlinkChamber reads only its own path: it gets its own copy of the Redis password.
  local redis_password
  redis_password=$(secret_field redis password)
  [ -n "$redis_password" ] || die "$EXIT_FAILED" "secret/redis has no password"
  copy_secret blinkchamber/redis password="$redis_password"
  ensure_secret blinkchamber/api tokens="$(random_secret 48)"

  project "$DB_NAMESPACE" postgresql-ha-credentials password=postgres#password repmgr-password=postgres#repmgrPassword
  project "$DB_NAMESPACE" postgresql-ha-pgpool-credentials admin-password=postgres#adminPassword
  # pgpool authenticates clients itself: the zitadel user goes into its pool_passwd.
  printf 'zitadel' >"$PRIVATE_TMP/usernames"
  secret_field postgres zitadelPassword >"$PRIVATE_TMP/passwords"
  [ -s "$PRIVATE_TMP/passwords" ] || die "$EXIT_FAILED" "Vault has no value for postgres#zitadelPassword"
  kubectl create secret generic postgresql-ha-pgpool-custom-users --namespace "$DB_NAMESPACE" \
    "--from-file=usernames=$PRIVATE_TMP/usernames" "--from-file=passwords=$PRIVATE_TMP/passwords" \
    --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  rm -f "$PRIVATE_TMP"/*
  log "Kubernetes Secret $DB_NAMESPACE/postgresql-ha-pgpool-custom-users updated from Vault"
  project "$DB_NAMESPACE" redis-credentials redis-password=redis#password
  project "$NAMESPACE" zitadel-masterkey masterkey=zitadel#masterkey
  secret_field postgres zitadelPassword >"$PRIVATE_TMP/zitadel-password"
  secret_field postgres password >"$PRIVATE_TMP/admin-password"
  {
    printf 'Database:\n  Postgres:\n    User:\n      Password: "%s"\n' "$(cat "$PRIVATE_TMP/zitadel-password")"
    printf '    Admin:\n      Password: "%s"\n' "$(cat "$PRIVATE_TMP/admin-password")"
  } >"$PRIVATE_TMP/config-yaml"
  kubectl create secret generic zitadel-db-credentials --namespace "$NAMESPACE" \
    "--from-file=config-yaml=$PRIVATE_TMP/config-yaml" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  log "Kubernetes Secret $NAMESPACE/zitadel-db-credentials updated from Vault"
}

main() {
  local command=""
  while [ "$#" -gt 0 ]; do
    case "$1" in
      -n | --namespace) [ "$#" -ge 2 ] || usage_error "$1 needs a value"; NAMESPACE=$2; shift 2 ;;
      --db-namespace) [ "$#" -ge 2 ] || usage_error "$1 needs a value"; DB_NAMESPACE=$2; shift 2 ;;
      -k | --keys-file) [ "$#" -ge 2 ] || usage_error "$1 needs a value"; KEYS_FILE=$2; shift 2 ;;
      --key-shares) [ "$#" -ge 2 ] || usage_error "$1 needs a value"; KEY_SHARES=$2; shift 2 ;;
      --key-threshold) [ "$#" -ge 2 ] || usage_error "$1 needs a value"; KEY_THRESHOLD=$2; shift 2 ;;
      --direct) DIRECT=1; shift ;;
      --rotate) ROTATE=1; shift ;;
      -h | --help) command=help; shift ;;
      -*) usage_error "unknown option: $1" ;;
      *) [ -z "$command" ] || usage_error "unexpected argument: $1"; command=$1; shift ;;
    esac
  done
  [ -n "$command" ] || usage_error "no command given"
  [[ "$KEY_SHARES" =~ ^[1-9][0-9]*$ && "$KEY_THRESHOLD" =~ ^[1-9][0-9]*$ ]] || usage_error "--key-shares and --key-threshold need positive numbers"
  [ "$KEY_THRESHOLD" -le "$KEY_SHARES" ] || usage_error "--key-threshold ($KEY_THRESHOLD) is larger than --key-shares ($KEY_SHARES)"
  [ "$command" = help ] && { usage; return 0; }
  case "$command" in
    init | unseal | auth | policies | secrets | all) ;;
    *) usage_error "unknown command '$command'" ;;
  esac
  if [ "$DIRECT" = 1 ]; then
    require_tools vault
    [ -n "${VAULT_ADDR:-}" ] || usage_error "--direct needs VAULT_ADDR"
  fi
  require_tools kubectl
  require_cluster
  case "$command" in
    init) cmd_init ;;
    unseal) cmd_unseal ;;
    auth) cmd_auth ;;
    policies) cmd_policies ;;
    secrets) cmd_secrets ;;
    all) cmd_init; cmd_unseal; cmd_auth; cmd_policies; cmd_secrets ;;
  esac
}

main "$@"
