#!/usr/bin/env bats
# deploy/scripts/vault-bootstrap.sh
# shellcheck disable=SC2016  # fake bodies are code for the fakes, expanded when they run

load helpers

ROOT_TOKEN=hvs.ROOTTOKENsecret0123

run_vb() {
  run bash "$SCRIPTS/vault-bootstrap.sh" "$@"
}

write_keys_file() {
  umask 077
  cat >"$TEST_TMP/keys.json" <<JSON
{
  "unseal_keys_b64": [
    "KEYone111",
    "KEYtwo222",
    "KEYthree333",
    "KEYfour444",
    "KEYfive555"
  ],
  "unseal_keys_hex": [
    "aa", "bb"
  ],
  "unseal_shares": 5,
  "unseal_threshold": 3,
  "root_token": "$ROOT_TOKEN"
}
JSON
}

# kubectl fake answering for a 3-server Vault. VAULT_INITIALIZED=true|false drives `vault status`.
fake_cluster() {
  fake kubectl '
    all="$*"
    case "$all" in
      cluster-info*) exit 0 ;;
      "get pods"*vault*) printf "vault-0\nvault-1\nvault-2\n" ;;
      *"jsonpath={.data.roles}"*) printf "blinkchamber postgres" ;;
      *"jsonpath={.data.blinkchamber-policy\\.hcl}"*) printf "path \"secret/data/blinkchamber/*\" {}" ;;
      *"jsonpath={.data."*) printf "{\"policies\":[\"x\"]}" ;;
      *"vault status -format=json"*) printf "{\"initialized\": %s}\n" "${VAULT_INITIALIZED:-false}"; exit 2 ;;
      *"vault operator init"*) printf "{\n  \"unseal_keys_b64\": [\n    \"NEWkey1\"\n  ],\n  \"root_token\": \"hvs.NEWROOT\"\n}\n" ;;
      *"vault kv put secret/"*)
        p=${all##*kv put secret/}; p=${p% -}
        mkdir -p "$TEST_TMP/kv/$(dirname "$p")"
        printf "%s\n" "$FAKE_STDIN" | tail -n +2 >"$TEST_TMP/kv/$p.json" ;;
      *"vault kv get -field="*)
        f=${all#*-field=}; f=${f%% *}; p=${all##*secret/}
        [ -f "$TEST_TMP/kv/$p.json" ] || exit 2
        sed -n "s/.*\"$f\":\"\([^\"]*\)\".*/\1/p" "$TEST_TMP/kv/$p.json" ;;
      *"create secret generic"*) echo "kind: Secret" ;;
    esac'
}

@test "help lists the steps" {
  run_vb help
  [ "$status" -eq 0 ]
  for c in init unseal auth policies secrets all; do [[ "$output" == *"$c"* ]]; done
}

@test "no command is a usage error" {
  run_vb
  [ "$status" -eq 2 ]
}

@test "unknown command is a usage error" {
  run_vb seal-everything
  [ "$status" -eq 2 ]
  [[ "$output" == *"unknown command"* ]]
}

@test "threshold larger than shares is rejected" {
  run_vb init --key-shares 3 --key-threshold 5
  [ "$status" -eq 2 ]
  [[ "$output" == *"larger than --key-shares"* ]]
}

@test "missing kubectl is named" {
  run_vb init
  [ "$status" -eq 3 ]
  [[ "$output" == *"not found on PATH: kubectl"* ]]
}

@test "unreachable cluster fails clearly" {
  fake kubectl 'exit 1'
  run_vb init
  [ "$status" -eq 4 ]
  [[ "$output" == *"cannot reach the Kubernetes cluster"* ]]
}

@test "--direct needs the vault CLI and VAULT_ADDR" {
  fake_cluster
  run_vb --direct init
  [ "$status" -eq 3 ]
  fake vault
  run_vb --direct init
  [ "$status" -eq 2 ]
  [[ "$output" == *"VAULT_ADDR"* ]]
}

@test "init writes the keys to a 0600 file and prints no secret" {
  fake_cluster
  run_vb init --keys-file "$TEST_TMP/out.json"
  [ "$status" -eq 0 ]
  called "^kubectl exec -i --namespace blinkchamber vault-0 -c vault -- vault operator init -format=json -key-shares=5 -key-threshold=3$"
  [ "$(stat -c %a "$TEST_TMP/out.json")" = 600 ]
  grep -q hvs.NEWROOT "$TEST_TMP/out.json"
  [[ "$output" != *"hvs.NEWROOT"* ]]
  [[ "$output" != *"NEWkey1"* ]]
}

@test "init never overwrites an existing keys file" {
  fake_cluster
  write_keys_file
  run_vb init --keys-file "$TEST_TMP/keys.json"
  [ "$status" -eq 1 ]
  [[ "$output" == *"refusing to overwrite"* ]]
  not_called "operator init"
  grep -q "$ROOT_TOKEN" "$TEST_TMP/keys.json"
}

@test "init on an initialised Vault does nothing" {
  fake_cluster
  VAULT_INITIALIZED=true run_vb init --keys-file "$TEST_TMP/out.json"
  [ "$status" -eq 0 ]
  [[ "$output" == *"already initialised"* ]]
  not_called "operator init"
  [ ! -e "$TEST_TMP/out.json" ]
}

@test "unseal sends threshold keys to every server, on stdin only" {
  fake_cluster
  write_keys_file
  run_vb unseal -k "$TEST_TMP/keys.json"
  [ "$status" -eq 0 ]
  [ "$(grep -c 'vault-0 -c vault -- vault operator unseal$' "$CALLS")" -eq 3 ]
  [ "$(grep -c 'vault-2 -c vault -- vault operator unseal$' "$CALLS")" -eq 3 ]
  not_called "KEY(one|two|three|four|five)"
  grep -q KEYthree333 "$STDIN_LOG"
  [ "$(grep -c KEYfour444 "$STDIN_LOG")" -eq 0 ]
  [[ "$output" != *KEY* ]]
}

@test "unseal without a keys file explains what to do" {
  fake_cluster
  run_vb unseal -k "$TEST_TMP/missing.json"
  [ "$status" -eq 1 ]
  [[ "$output" == *"run 'vault-bootstrap.sh init' first"* ]]
}

@test "auth enables KV v2 and Kubernetes auth with the token on stdin" {
  fake_cluster
  write_keys_file
  run_vb auth -k "$TEST_TMP/keys.json"
  [ "$status" -eq 0 ]
  called "vault secrets enable -path=secret kv-v2$"
  called "vault auth enable kubernetes$"
  called "vault write auth/kubernetes/config kubernetes_host=https://kubernetes.default.svc$"
  not_called "$ROOT_TOKEN"
  grep -q "$ROOT_TOKEN" "$STDIN_LOG"
}

@test "auth tolerates engines that are already enabled" {
  fake_cluster
  write_keys_file
  fake kubectl '
    case "$*" in
      *"secrets enable"*|*"auth enable"*) echo "path is already in use at secret/" >&2; exit 2 ;;
    esac'
  run_vb auth -k "$TEST_TMP/keys.json"
  [ "$status" -eq 0 ]
  [[ "$output" == *"already enabled"* ]]
  called "auth/kubernetes/config"
}

@test "policies loads every role listed in the ConfigMap" {
  fake_cluster
  write_keys_file
  run_vb policies -k "$TEST_TMP/keys.json"
  [ "$status" -eq 0 ]
  called "vault policy write blinkchamber-policy -$"
  called "vault write auth/kubernetes/role/blinkchamber -$"
  called "vault policy write postgres-policy -$"
  called "vault write auth/kubernetes/role/postgres -$"
  grep -q 'secret/data/blinkchamber' "$STDIN_LOG"
  not_called "$ROOT_TOKEN"
}

@test "secrets creates every platform secret and projects the chart ones" {
  fake_cluster
  write_keys_file
  run_vb secrets -k "$TEST_TMP/keys.json"
  [ "$status" -eq 0 ]
  for p in postgres redis zitadel blinkchamber/redis blinkchamber/api; do
    called "vault kv put secret/$p -$"
  done
  for s in "database postgresql-ha-credentials" "database postgresql-ha-pgpool-credentials" \
    "database postgresql-ha-pgpool-custom-users" \
    "database redis-credentials" "blinkchamber zitadel-masterkey" "blinkchamber zitadel-db-credentials"; do
    called "create secret generic ${s#* } --namespace ${s% *} "
  done
  [ "$(grep -c "^kubectl apply -f -$" "$CALLS")" -eq 6 ]
  # BlinkChamber's copy of the Redis password is the Redis password
  [ "$(sed 's/.*"password":"\([^"]*\)".*/\1/' "$TEST_TMP/kv/redis.json")" = \
    "$(sed 's/.*"password":"\([^"]*\)".*/\1/' "$TEST_TMP/kv/blinkchamber/redis.json")" ]
  grep -Eq '"tokens":"[A-Za-z0-9]{48}"' "$TEST_TMP/kv/blinkchamber/api.json"
}

@test "secrets never puts a value on a command line or in the output" {
  fake_cluster
  write_keys_file
  mkdir -p "$TEST_TMP/kv"
  printf '{"password":"existing-value-xyz"}' >"$TEST_TMP/kv/redis.json"
  run_vb secrets -k "$TEST_TMP/keys.json"
  [ "$status" -eq 0 ]
  not_called "existing-value-xyz"
  not_called "$ROOT_TOKEN"
  [[ "$output" != *"existing-value-xyz"* ]]
  # existing secrets are kept, except BlinkChamber's copy of the Redis password
  [[ "$output" == *"secret/redis exists, kept"* ]]
  called "vault kv put secret/blinkchamber/redis -$"
  not_called "vault kv put secret/redis "
  # the generated JSON reached Vault through stdin
  grep -q '"password":"existing-value-xyz"' "$STDIN_LOG"
}

@test "secrets leaves no plaintext files behind" {
  fake_cluster
  write_keys_file
  export TMPDIR="$TEST_TMP/tmp"
  mkdir -p "$TMPDIR"
  run_vb secrets -k "$TEST_TMP/keys.json"
  [ "$status" -eq 0 ]
  [ -z "$(ls -A "$TMPDIR")" ]
}

@test "every Secret the install phases expect from the bootstrap is created by it" {
  fake_cluster
  write_keys_file
  run_vb secrets -k "$TEST_TMP/keys.json"
  [ "$status" -eq 0 ]
  # shellcheck source=/dev/null
  . "$SCRIPTS/lib/phases.sh"
  local entry ns
  for entry in "${BOOTSTRAP_CREATES[@]}"; do
    ns=${entry#Secret/}; ns=${ns%%/*}
    [ "$ns" = release ] && ns=blinkchamber
    called "create secret generic ${entry##*/} --namespace $ns "
  done
}

@test "pgpool gets the zitadel user with ZITADEL's database password" {
  fake_cluster
  write_keys_file
  run_vb secrets -k "$TEST_TMP/keys.json"
  [ "$status" -eq 0 ]
  called "create secret generic postgresql-ha-pgpool-custom-users --namespace database --from-file=usernames=.* --from-file=passwords=.*"
}

@test "--rotate rotates the API tokens and refuses the database passwords and the masterkey, saying why" {
  fake_cluster
  write_keys_file
  run_vb secrets -k "$TEST_TMP/keys.json"
  [ "$status" -eq 0 ]
  cp -r "$TEST_TMP/kv" "$TEST_TMP/kv.before"
  : >"$CALLS"
  run_vb secrets --rotate -k "$TEST_TMP/keys.json"
  [ "$status" -eq 0 ]
  [ "$(cat "$TEST_TMP/kv/blinkchamber/api.json")" != "$(cat "$TEST_TMP/kv.before/blinkchamber/api.json")" ]
  local p
  for p in postgres redis zitadel; do
    [ "$(cat "$TEST_TMP/kv/$p.json")" = "$(cat "$TEST_TMP/kv.before/$p.json")" ]
  done
  not_called "vault kv put secret/postgres "
  not_called "vault kv put secret/zitadel "
  [[ "$output" == *"not rotating secret/postgres: the PostgreSQL passwords are also stored in the database"* ]]
  [[ "$output" == *"not rotating secret/zitadel: the ZITADEL masterkey"*"never rotated"* ]]
  [[ "$output" == *"not rotating secret/redis: Redis and the Sentinels"* ]]
}
