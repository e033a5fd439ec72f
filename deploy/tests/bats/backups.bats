#!/usr/bin/env bats
# deploy/scripts/{redis,postgres,vault}-backup.sh
# shellcheck disable=SC2016  # fake bodies are code for the fakes, expanded when they run

load helpers

# --- Redis -------------------------------------------------------------------

# kubectl for a 3-node Redis whose Sentinel names 10.0.0.12 (redis-node-1) as master.
# INFO persistence shows the BGSAVE finished unless BGSAVE_STUCK=1; cp writes an RDB to the target.
fake_redis_cluster() {
  fake kubectl '
    all="$*"
    case "$all" in
      cluster-info*) exit 0 ;;
      *"SENTINEL get-master-addr-by-name"*) printf "10.0.0.12\n6379\n" ;;
      "get pods"*"status.podIP=10.0.0.12"*) printf "redis-node-1" ;;
      *"INFO persistence") if [ -f "$TEST_TMP/bgsave" ] && [ -z "${BGSAVE_STUCK:-}" ]; then printf "rdb_bgsave_in_progress:0\r\nrdb_last_bgsave_status:ok\r\n"; else printf "rdb_bgsave_in_progress:1\r\n"; fi ;;
      *BGSAVE) touch "$TEST_TMP/bgsave"; echo "Background saving started" ;;
      "cp --namespace database -c redis "*) printf "REDIS0011fake-rdb" >"${@: -1}" ;;
      "get statefulset redis-node"*) printf 3 ;;
    esac'
}

make_rdb() {
  mkdir -p "$TEST_TMP/in"
  printf 'REDIS0011data' >"$TEST_TMP/in/dump.rdb"
}

@test "redis: help" {
  run bash "$SCRIPTS/redis-backup.sh" help
  [ "$status" -eq 0 ]
  [[ "$output" == *"backup [FILE]"* && "$output" == *"restore FILE"* ]]
}

@test "redis: no command and bad --direct are usage errors" {
  run bash "$SCRIPTS/redis-backup.sh"
  [ "$status" -eq 2 ]
  run bash "$SCRIPTS/redis-backup.sh" --direct nohostport backup
  [ "$status" -eq 2 ]
  [[ "$output" == *"HOST:PORT"* ]]
}

@test "redis: missing kubectl is named" {
  run bash "$SCRIPTS/redis-backup.sh" backup
  [ "$status" -eq 3 ]
  [[ "$output" == *"kubectl"* ]]
}

@test "redis: backup runs BGSAVE on the Sentinel master and copies dump.rdb out" {
  fake_redis_cluster
  run bash "$SCRIPTS/redis-backup.sh" backup "$TEST_TMP/out/r.rdb"
  [ "$status" -eq 0 ]
  called "exec --namespace database redis-node-0 -c sentinel -- .* SENTINEL get-master-addr-by-name \"\\\$1\" redis-cli mymaster$"
  called "exec --namespace database redis-node-1 -c redis -- .* redis-cli BGSAVE$"
  [ "$(line_of 'BGSAVE$')" -lt "$(line_of '^kubectl cp')" ]
  called "^kubectl cp --namespace database -c redis redis-node-1:/data/dump.rdb $TEST_TMP/out/r.rdb$"
  [ "$(cat "$TEST_TMP/out/r.rdb")" = "REDIS0011fake-rdb" ]
  (cd "$TEST_TMP/out" && sha256sum -c r.rdb.sha256)
}

@test "redis: backup gives up when BGSAVE never finishes" {
  fake_redis_cluster
  BGSAVE_STUCK=1 BACKUP_TIMEOUT=3 run bash "$SCRIPTS/redis-backup.sh" backup "$TEST_TMP/r.rdb"
  [ "$status" -eq 1 ]
  [[ "$output" == *"BGSAVE did not finish within 3s"* ]]
  not_called "^kubectl cp"
}

@test "redis: direct backup uses the local redis-cli with the password in the environment" {
  fake redis-cli '
    case "$*" in
      *"INFO persistence") if [ -f "$TEST_TMP/bgsave" ]; then printf "rdb_bgsave_in_progress:0\nrdb_last_bgsave_status:ok\n"; else printf "rdb_bgsave_in_progress:1\n"; fi ;;
      *BGSAVE) touch "$TEST_TMP/bgsave" ;;
      *--rdb*) printf "REDIS0011direct" >"${@: -1}" ;;
    esac
    echo "auth=${REDISCLI_AUTH:-none}" >>"$TEST_TMP/env.log"'
  printf 'pw-s3cret\n' >"$TEST_TMP/pw"
  run bash "$SCRIPTS/redis-backup.sh" --direct 127.0.0.1:16379 --password-file "$TEST_TMP/pw" backup "$TEST_TMP/d.rdb"
  [ "$status" -eq 0 ]
  called "^redis-cli --no-auth-warning -h 127.0.0.1 -p 16379 BGSAVE$"
  called "^redis-cli --no-auth-warning -h 127.0.0.1 -p 16379 --rdb $TEST_TMP/d.rdb$"
  not_called "pw-s3cret"
  grep -q "auth=pw-s3cret" "$TEST_TMP/env.log"
  [ "$(cat "$TEST_TMP/d.rdb")" = "REDIS0011direct" ]
}

@test "redis: restore refuses a file that is not an RDB" {
  fake_redis_cluster
  printf 'hello' >"$TEST_TMP/x.rdb"
  run bash "$SCRIPTS/redis-backup.sh" restore "$TEST_TMP/x.rdb" --yes
  [ "$status" -eq 1 ]
  [[ "$output" == *"no REDIS header"* ]]
  not_called "scale"
}

@test "redis: restore refuses a file whose checksum does not match" {
  fake_redis_cluster
  make_rdb
  (cd "$TEST_TMP/in" && sha256sum dump.rdb >dump.rdb.sha256)
  printf 'more' >>"$TEST_TMP/in/dump.rdb"
  run bash "$SCRIPTS/redis-backup.sh" restore "$TEST_TMP/in/dump.rdb" --yes
  [ "$status" -eq 1 ]
  [[ "$output" == *"checksum mismatch"* ]]
}

@test "redis: restore without confirmation changes nothing" {
  fake_redis_cluster
  make_rdb
  run bash "$SCRIPTS/redis-backup.sh" restore "$TEST_TMP/in/dump.rdb" </dev/null
  [ "$status" -eq 1 ]
  [[ "$output" == *"aborted; nothing was changed"* ]]
  not_called "scale"
}

@test "redis: restore needs a file" {
  run bash "$SCRIPTS/redis-backup.sh" restore
  [ "$status" -eq 2 ]
}

@test "redis: restore stops Redis, loads node 0's volume, starts node 0 first" {
  fake_redis_cluster
  make_rdb
  run bash "$SCRIPTS/redis-backup.sh" restore "$TEST_TMP/in/dump.rdb" --yes
  [ "$status" -eq 0 ]
  a=$(line_of "scale statefulset redis-node --namespace database --replicas=0$")
  b=$(line_of "^kubectl run redis-restore .*redis-data-redis-node-0")
  c=$(line_of "^kubectl cp --namespace database $TEST_TMP/in/dump.rdb redis-restore:/data/restore.rdb$")
  d=$(line_of "^kubectl exec -i --namespace database redis-restore -- sh -s /data$")
  # the volume preparation (AOF base from the RDB) went in on stdin
  grep -q "1.base.rdb seq 1 type b" "$STDIN_LOG"
  e=$(line_of "scale statefulset redis-node --namespace database --replicas=1$")
  f=$(line_of "scale statefulset redis-node --namespace database --replicas=3$")
  [ -n "$a" ] && [ "$a" -lt "$b" ] && [ "$b" -lt "$c" ] && [ "$c" -lt "$d" ] && [ "$d" -lt "$e" ] && [ "$e" -lt "$f" ]
}

@test "redis: restore is refused with --direct" {
  make_rdb
  run bash "$SCRIPTS/redis-backup.sh" --direct h:1 restore "$TEST_TMP/in/dump.rdb"
  [ "$status" -eq 2 ]
}

# --- PostgreSQL --------------------------------------------------------------

fake_pg_cluster() {
  fake kubectl '
    all="$*"
    case "$all" in
      cluster-info*) exit 0 ;;
      "get pods"*postgresql*) printf "postgresql-ha-postgresql-0\npostgresql-ha-postgresql-1\n" ;;
      *"postgresql-ha-postgresql-0 "*"pg_is_in_recovery"*) echo t ;;
      *"postgresql-ha-postgresql-1 "*"pg_is_in_recovery"*) echo f ;;
      *" pg pg_dump "*) [ -n "${PG_DUMP_FAILS:-}" ] && exit 1; printf "PGDMPfake" ;;
    esac'
}

@test "postgres: help and usage errors" {
  run bash "$SCRIPTS/postgres-backup.sh" help
  [ "$status" -eq 0 ]
  run bash "$SCRIPTS/postgres-backup.sh" backup -d "bad;name"
  [ "$status" -eq 2 ]
  [[ "$output" == *"invalid database name"* ]]
  run bash "$SCRIPTS/postgres-backup.sh" frobnicate
  [ "$status" -eq 2 ]
}

@test "postgres: backup streams pg_dump -Fc from a node" {
  fake_pg_cluster
  run bash "$SCRIPTS/postgres-backup.sh" backup "$TEST_TMP/db.dump"
  [ "$status" -eq 0 ]
  called "^kubectl exec -i --namespace database postgresql-ha-postgresql-0 -c postgresql -- sh -c .* pg pg_dump -Fc -h 127.0.0.1 -U postgres -d zitadel$"
  [ "$(cat "$TEST_TMP/db.dump")" = PGDMPfake ]
  [ -f "$TEST_TMP/db.dump.sha256" ]
}

@test "postgres: a failing pg_dump is reported and leaves no checksum" {
  fake_pg_cluster
  PG_DUMP_FAILS=1 run bash "$SCRIPTS/postgres-backup.sh" backup "$TEST_TMP/db.dump"
  [ "$status" -eq 1 ]
  [[ "$output" == *"pg_dump failed"* ]]
  [ ! -f "$TEST_TMP/db.dump.sha256" ]
}

@test "postgres: direct backup uses the local pg_dump, password in the environment" {
  fake pg_dump 'echo "pw=${PGPASSWORD:-none}" >>"$TEST_TMP/env.log"; printf PGDMPx >"${@: -1}"'
  printf 'pg-s3cret' >"$TEST_TMP/pw"
  run bash "$SCRIPTS/postgres-backup.sh" --direct localhost:15432 --password-file "$TEST_TMP/pw" -d app backup "$TEST_TMP/a.dump"
  [ "$status" -eq 0 ]
  called "^pg_dump -Fc -h localhost -p 15432 -U postgres -d app -f $TEST_TMP/a.dump$"
  not_called "pg-s3cret"
  grep -q "pw=pg-s3cret" "$TEST_TMP/env.log"
}

@test "postgres: direct backup without pg_dump is named" {
  run bash "$SCRIPTS/postgres-backup.sh" --direct localhost:5432 backup
  [ "$status" -eq 3 ]
  [[ "$output" == *"pg_dump"* ]]
}

@test "postgres: restore goes to the primary" {
  fake_pg_cluster
  printf 'PGDMPdata' >"$TEST_TMP/r.dump"
  run bash "$SCRIPTS/postgres-backup.sh" restore "$TEST_TMP/r.dump" -y
  [ "$status" -eq 0 ]
  called "postgresql-ha-postgresql-1 -c postgresql -- sh -c .* pg pg_restore --clean --if-exists --no-owner -h 127.0.0.1 -U postgres -d zitadel$"
  not_called "postgresql-ha-postgresql-0 .*pg_restore"
  grep -q PGDMPdata "$STDIN_LOG"
}

@test "postgres: restore refuses a non-custom-format file and asks before changing data" {
  fake_pg_cluster
  printf 'CREATE TABLE x();' >"$TEST_TMP/plain.sql"
  run bash "$SCRIPTS/postgres-backup.sh" restore "$TEST_TMP/plain.sql" -y
  [ "$status" -eq 1 ]
  [[ "$output" == *"no PGDMP header"* ]]
  printf 'PGDMPdata' >"$TEST_TMP/r.dump"
  run bash "$SCRIPTS/postgres-backup.sh" restore "$TEST_TMP/r.dump" </dev/null
  [ "$status" -eq 1 ]
  not_called "pg_restore"
}

@test "postgres: direct restore uses the local pg_restore" {
  fake pg_restore
  printf 'PGDMPdata' >"$TEST_TMP/r.dump"
  run bash "$SCRIPTS/postgres-backup.sh" --direct db:5432 restore "$TEST_TMP/r.dump" --yes
  [ "$status" -eq 0 ]
  called "^pg_restore --clean --if-exists --no-owner -h db -p 5432 -U postgres -d zitadel $TEST_TMP/r.dump$"
}

# --- Vault -------------------------------------------------------------------

fake_vault_cluster() {
  fake kubectl '
    case "$*" in
      cluster-info*) exit 0 ;;
      *"snapshot save /dev/stdout"*) printf "SNAPSHOTDATA" ;;
    esac'
  printf '{\n  "root_token": "hvs.VAULTROOT"\n}\n' >"$TEST_TMP/keys.json"
}

@test "vault: a token is required" {
  fake_vault_cluster
  run bash "$SCRIPTS/vault-backup.sh" backup
  [ "$status" -eq 2 ]
  [[ "$output" == *"no token"* ]]
}

@test "vault: backup streams a Raft snapshot, token on stdin only" {
  fake_vault_cluster
  run bash "$SCRIPTS/vault-backup.sh" backup "$TEST_TMP/v.snap" -k "$TEST_TMP/keys.json"
  [ "$status" -eq 0 ]
  called "^kubectl exec -i --namespace blinkchamber vault-0 -c vault -- sh -c .* vault operator raft snapshot save /dev/stdout$"
  not_called "hvs.VAULTROOT"
  grep -q hvs.VAULTROOT "$STDIN_LOG"
  [ "$(cat "$TEST_TMP/v.snap")" = SNAPSHOTDATA ]
  [[ "$output" != *VAULTROOT* ]]
}

@test "vault: default backup file goes to BACKUP_DIR with a checksum" {
  fake_vault_cluster
  printf 'hvs.FROMFILE\n' >"$TEST_TMP/token"
  run bash "$SCRIPTS/vault-backup.sh" backup --token-file "$TEST_TMP/token"
  [ "$status" -eq 0 ]
  ls "$BACKUP_DIR"/vault-*.snap "$BACKUP_DIR"/vault-*.snap.sha256
  grep -q hvs.FROMFILE "$STDIN_LOG"
}

@test "vault: restore asks first, then streams the snapshot" {
  fake_vault_cluster
  printf 'SNAPSHOTDATA' >"$TEST_TMP/v.snap"
  run bash "$SCRIPTS/vault-backup.sh" restore "$TEST_TMP/v.snap" -k "$TEST_TMP/keys.json" </dev/null
  [ "$status" -eq 1 ]
  not_called "snapshot restore"
  run bash "$SCRIPTS/vault-backup.sh" restore "$TEST_TMP/v.snap" -k "$TEST_TMP/keys.json" --yes
  [ "$status" -eq 0 ]
  called "vault operator raft snapshot restore /dev/stdin$"
  grep -q SNAPSHOTDATA "$STDIN_LOG"
}

@test "vault: direct mode needs VAULT_ADDR and uses the local CLI" {
  fake vault 'echo "token=${VAULT_TOKEN:-none}" >>"$TEST_TMP/env.log"; [ "$3" = snapshot ] && printf SNAP >"${@: -1}"; true'
  run bash "$SCRIPTS/vault-backup.sh" --direct backup -k "$TEST_TMP/none"
  [ "$status" -eq 2 ]
  printf '{\n  "root_token": "hvs.DIRECT"\n}\n' >"$TEST_TMP/keys.json"
  VAULT_ADDR=http://127.0.0.1:8200 run bash "$SCRIPTS/vault-backup.sh" --direct backup "$TEST_TMP/d.snap" -k "$TEST_TMP/keys.json"
  [ "$status" -eq 0 ]
  called "^vault operator raft snapshot save $TEST_TMP/d.snap$"
  not_called "hvs.DIRECT"
  grep -q "token=hvs.DIRECT" "$TEST_TMP/env.log"
}

# --- Command line shared by the three runbooks ------------------------------------

@test "all runbooks: unknown option, missing value, extra argument and unknown command are usage errors" {
  local s
  for s in postgres-backup.sh redis-backup.sh vault-backup.sh; do
    run bash "$SCRIPTS/$s" --bogus backup
    [ "$status" -eq 2 ]
    [[ "$output" == *"unknown option: --bogus"* && "$output" == *"Run '$s help' for usage."* ]]
    run bash "$SCRIPTS/$s" backup --namespace
    [ "$status" -eq 2 ]
    [[ "$output" == *"--namespace needs a value"* ]]
    run bash "$SCRIPTS/$s" backup a b
    [ "$status" -eq 2 ]
    [[ "$output" == *"too many arguments"* ]]
    run bash "$SCRIPTS/$s" frobnicate
    [ "$status" -eq 2 ]
    [[ "$output" == *"unknown command 'frobnicate'"* ]]
  done
}
