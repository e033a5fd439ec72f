#!/usr/bin/env bats
# deploy/scripts/deploy-umbrella.sh
# shellcheck disable=SC2016  # fake bodies are code for the fakes, expanded when they run

load helpers

run_deploy() {
  run bash "$SCRIPTS/deploy-umbrella.sh" "$@"
}

# helm that knows no installed release.
fake_helm_not_installed() {
  fake helm 'case "$1" in status) echo "Error: release: not found" >&2; exit 1 ;; esac'
}

@test "help prints every command" {
  run_deploy help
  [ "$status" -eq 0 ]
  for c in install upgrade uninstall status logs help; do
    [[ "$output" == *"$c"* ]]
  done
}

@test "no command is a usage error" {
  run_deploy
  [ "$status" -eq 2 ]
  [[ "$output" == *"no command given"* ]]
}

@test "unknown command is a usage error" {
  fake helm
  fake kubectl
  run_deploy explode
  [ "$status" -eq 2 ]
  [[ "$output" == *"unknown command 'explode'"* ]]
}

@test "unknown environment is rejected before anything runs" {
  fake helm
  fake kubectl
  run_deploy --env staging install
  [ "$status" -eq 2 ]
  [[ "$output" == *"unknown environment 'staging'"* ]]
  [ ! -s "$CALLS" ]
}

@test "unknown option is rejected" {
  run_deploy --bogus status
  [ "$status" -eq 2 ]
  [[ "$output" == *"unknown option: --bogus"* ]]
}

@test "missing helm is named" {
  fake kubectl
  run_deploy install
  [ "$status" -eq 3 ]
  [[ "$output" == *"required tool(s) not found on PATH: helm"* ]]
}

@test "missing helm and kubectl are both named" {
  run_deploy install
  [ "$status" -eq 3 ]
  [[ "$output" == *"helm kubectl"* ]]
}

@test "unreachable cluster fails clearly" {
  fake helm
  fake kubectl 'case "$1" in cluster-info) exit 1 ;; config) echo kind-gone ;; esac'
  run_deploy install
  [ "$status" -eq 4 ]
  [[ "$output" == *"cannot reach the Kubernetes cluster (kubectl context: kind-gone)"* ]]
  not_called '^helm install'
}

# A vault-bootstrap.sh that records its arguments (FAIL=1: it fails).
fake_bootstrap() {
  fake vault-bootstrap '[ "${BOOTSTRAP_FAIL:-0}" = 1 ] && exit 1; exit 0'
  export VAULT_BOOTSTRAP="$FAKE_BIN/vault-bootstrap"
}

@test "install dev runs the phases in order: infrastructure, Vault, Vault bootstrap, data, applications" {
  fake kubectl 'case "$1 $2" in "get crd") exit 1 ;; esac'
  fake_helm_not_installed
  fake_bootstrap
  run_deploy install
  [ "$status" -eq 0 ]
  called "^helm dependency list .*helm/blinkchamber$"
  local off="--set redis.metrics.serviceMonitor.enabled=false --set postgresql-ha.metrics.serviceMonitor.enabled=false --set zitadel.metrics.serviceMonitor.enabled=false --set vault.serverTelemetry.serviceMonitor.enabled=false"
  called "^helm install blinkchamber .*helm/blinkchamber --namespace blinkchamber --create-namespace -f .*/values.yaml -f .*/values-dev.yaml $off --set vault.enabled=false --set postgresql-ha.enabled=false --set redis.enabled=false --set zitadel.enabled=false --set blinkchamber-runtime.enabled=false --wait --timeout 20m$"
  called "^helm upgrade blinkchamber .* -f .*/values-dev.yaml $off --set postgresql-ha.enabled=false --set redis.enabled=false --set zitadel.enabled=false --set blinkchamber-runtime.enabled=false --timeout 20m$"
  called "^kubectl wait --namespace blinkchamber --for=condition=Available deployment"
  called "^vault-bootstrap all --namespace blinkchamber --db-namespace database --keys-file ./vault-init.json$"
  called "^helm upgrade blinkchamber .* -f .*/values-dev.yaml $off --set zitadel.enabled=false --set blinkchamber-runtime.enabled=false --wait --timeout 20m$"
  called "^helm upgrade blinkchamber .* -f .*/values-dev.yaml $off --wait --timeout 20m$"
  [ "$(line_of '^helm install')" -lt "$(line_of '^helm upgrade .*--set postgresql-ha.enabled=false')" ]
  [ "$(line_of '^helm upgrade .*--set postgresql-ha.enabled=false')" -lt "$(line_of '^kubectl wait --namespace blinkchamber --for=condition=Available')" ]
  [ "$(line_of '^kubectl wait --namespace blinkchamber --for=condition=Available')" -lt "$(line_of '^vault-bootstrap')" ]
  [ "$(line_of '^vault-bootstrap')" -lt "$(line_of '^helm upgrade .*serviceMonitor.enabled=false --set zitadel.enabled=false')" ]
  [ "$(line_of '^helm upgrade .*serviceMonitor.enabled=false --set zitadel.enabled=false')" -lt "$(line_of '^helm upgrade .*serviceMonitor.enabled=false --wait')" ]
}

@test "install keeps the upstream ServiceMonitors when the cluster has their CRD" {
  fake kubectl
  fake_helm_not_installed
  fake_bootstrap
  run_deploy install
  [ "$status" -eq 0 ]
  not_called "serviceMonitor.enabled=false"
}

@test "install prod from BLINKCHAMBER_ENV with an extra values file applied last" {
  fake kubectl
  fake_helm_not_installed
  fake_bootstrap
  echo "redis: {enabled: true}" >"$TEST_TMP/site.yaml"
  BLINKCHAMBER_ENV=prod run_deploy install -f "$TEST_TMP/site.yaml" --skip-deps -n platform -r bc -k "$TEST_TMP/keys.json"
  [ "$status" -eq 0 ]
  called "^helm install bc .* --namespace platform --create-namespace -f .*/values.yaml -f .*/values-prod.yaml -f $TEST_TMP/site.yaml "
  called "^vault-bootstrap all --namespace platform --db-namespace database --keys-file $TEST_TMP/keys.json$"
  not_called "^helm dependency"
}

@test "install stops at a failed phase and says how to resume" {
  fake kubectl
  fake_helm_not_installed
  fake_bootstrap
  BOOTSTRAP_FAIL=1 run_deploy install
  [ "$status" -eq 1 ]
  [[ "$output" == *"phase vault-bootstrap failed"*"install --from-phase vault-bootstrap"* ]]
  not_called "^helm upgrade .*--wait"
}

@test "install --from-phase data resumes without reinstalling or bootstrapping again" {
  fake kubectl
  fake helm
  fake_bootstrap
  run_deploy install --from-phase data
  [ "$status" -eq 0 ]
  not_called "^helm install"
  not_called "^vault-bootstrap"
  called "^helm upgrade blinkchamber .*--set zitadel.enabled=false --set blinkchamber-runtime.enabled=false --wait"
}

@test "install --from-phase with an unknown phase is a usage error" {
  run_deploy install --from-phase everything
  [ "$status" -eq 2 ]
  [[ "$output" == *"unknown phase 'everything'"* ]]
}

@test "install refuses when the release exists" {
  fake kubectl
  fake helm
  run_deploy install
  [ "$status" -eq 1 ]
  [[ "$output" == *"already exists"*"upgrade"* ]]
  not_called "^helm install"
}

@test "install with a missing values file is a usage error" {
  fake kubectl
  fake helm
  run_deploy install -f "$TEST_TMP/nope.yaml"
  [ "$status" -eq 2 ]
  [[ "$output" == *"values file not readable"* ]]
}

@test "upgrade needs an installed release" {
  fake kubectl
  fake_helm_not_installed
  run_deploy upgrade
  [ "$status" -eq 1 ]
  [[ "$output" == *"is not installed"* ]]
  not_called "^helm upgrade"
}

@test "upgrade is atomic" {
  fake kubectl
  fake helm
  run_deploy --env prod upgrade
  [ "$status" -eq 0 ]
  called "^helm upgrade blinkchamber .* -f .*/values-prod.yaml --timeout 20m --atomic$"
}

@test "uninstall without a terminal and without --yes deletes nothing" {
  fake kubectl
  fake helm
  run_deploy uninstall </dev/null
  [ "$status" -eq 1 ]
  [[ "$output" == *"aborted; nothing was removed"* ]]
  not_called "^helm uninstall"
  not_called "^kubectl delete"
}

@test "uninstall answered with anything but yes deletes nothing" {
  fake kubectl
  fake helm
  CONFIRM_FROM_STDIN=1 run_deploy uninstall <<<"y"
  [ "$status" -eq 1 ]
  [[ "$output" == *"DELETE ALL DATA"* ]]
  not_called "^helm uninstall"
}

@test "uninstall answered yes removes the release and the data" {
  fake kubectl
  fake helm
  CONFIRM_FROM_STDIN=1 run_deploy uninstall <<<"yes"
  [ "$status" -eq 0 ]
  called "^helm uninstall blinkchamber --namespace blinkchamber --wait$"
  called "^kubectl delete pvc --namespace blinkchamber -l app.kubernetes.io/instance=blinkchamber"
  called "^kubectl delete namespace database"
}

@test "uninstall --yes --keep-data keeps the volumes" {
  fake kubectl
  fake helm
  run_deploy uninstall --yes --keep-data
  [ "$status" -eq 0 ]
  called "^helm uninstall blinkchamber"
  not_called "^kubectl delete"
  [[ "$output" == *"kept PersistentVolumeClaims"* ]]
}

@test "status shows the release and both namespaces" {
  fake kubectl
  fake helm
  run_deploy status
  [ "$status" -eq 0 ]
  called "^helm status blinkchamber --namespace blinkchamber$"
  called "^kubectl get pods --namespace blinkchamber"
  called "^kubectl get pods --namespace database"
  called "^kubectl get pvc --namespace database"
}

@test "logs of one component use its namespace and label" {
  fake kubectl
  run_deploy logs redis --tail 50
  [ "$status" -eq 0 ]
  called "^kubectl logs --namespace database -l app.kubernetes.io/name=redis --all-containers --prefix --tail 50$"
  not_called "app.kubernetes.io/name=vault"
}

@test "logs without a component covers all five" {
  fake kubectl
  run_deploy logs
  [ "$status" -eq 0 ]
  [ "$(grep -c '^kubectl logs' "$CALLS")" -eq 5 ]
}

@test "logs of an unknown component is a usage error" {
  fake kubectl
  run_deploy logs mongodb
  [ "$status" -eq 2 ]
  [[ "$output" == *"unknown component 'mongodb'"* ]]
}

@test "--tail must be a number" {
  run_deploy logs --tail lots
  [ "$status" -eq 2 ]
}
