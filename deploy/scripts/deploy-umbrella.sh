#!/usr/bin/env bash
# Install, upgrade, inspect and remove the BlinkChamber platform (the umbrella chart).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$SCRIPT_DIR/lib/common.sh"
# shellcheck source=lib/phases.sh source-path=SCRIPTDIR
. "$SCRIPT_DIR/lib/phases.sh"

CHART_DIR=${CHART_DIR:-$SCRIPT_DIR/../helm/blinkchamber}
VAULT_BOOTSTRAP=${VAULT_BOOTSTRAP:-$SCRIPT_DIR/vault-bootstrap.sh}
ENVIRONMENT=${BLINKCHAMBER_ENV:-dev}
NAMESPACE=${BLINKCHAMBER_NAMESPACE:-blinkchamber}
RELEASE=${BLINKCHAMBER_RELEASE:-blinkchamber}
DB_NAMESPACE=${BLINKCHAMBER_DB_NAMESPACE:-database}
TIMEOUT=${BLINKCHAMBER_TIMEOUT:-20m}
export ASSUME_YES=0  # read by confirm() in lib/common.sh
KEEP_DATA=0
SKIP_DEPS=0
TAIL=200
EXTRA_VALUES=()
KEYS_FILE=${VAULT_KEYS_FILE:-./vault-init.json}
FROM_PHASE=${INSTALL_PHASES[0]}

usage() {
  cat <<USAGE
Usage: ${0##*/} [options] COMMAND [ARGS]

Commands:
  install            install the platform on an empty cluster, in phases (fails if the
                     release already exists, unless --from-phase resumes a later phase):
                       infrastructure   cert-manager, ingress-nginx (waits until ready)
                       vault            + Vault and its certificates (runs sealed)
                       vault-bootstrap  vault-bootstrap.sh all (init, unseal, secrets)
                       data             + PostgreSQL HA, Redis (waits until ready)
                       applications     + ZITADEL, BlinkChamber (waits until ready)
  upgrade            upgrade an installed platform to this checkout's chart and values
  uninstall          remove the release; asks before deleting data volumes
  status             release status, pods and volumes of every platform namespace
  logs [COMPONENT]   recent logs: vault, zitadel, blinkchamber, postgresql, redis (default: all)
  help               this text

Options:
  -e, --env ENV          dev (kind, one replica each) or prod; default: \$BLINKCHAMBER_ENV or dev
  -n, --namespace NS     release namespace (default: blinkchamber)
  -r, --release NAME     release name (default: blinkchamber)
  -f, --values FILE      extra values file, applied last (repeatable)
      --timeout DURATION helm --timeout for install/upgrade (default: 20m)
  -k, --keys-file FILE   install: where vault-bootstrap.sh writes the Vault keys
                         (default: ./vault-init.json)
      --from-phase PHASE install: resume at PHASE after fixing what stopped it
      --skip-deps        accepted for compatibility; the upstream charts are vendored
      --keep-data        uninstall: keep PersistentVolumeClaims and the database namespace
      --tail N           logs: lines per container (default: 200)
  -y, --yes              do not ask for confirmation
USAGE
}

parse_args() {
  COMMAND=""
  ARGS=()
  while [ "$#" -gt 0 ]; do
    case "$1" in
      -e | --env) [ "$#" -ge 2 ] || usage_error "$1 needs a value"; ENVIRONMENT=$2; shift 2 ;;
      -n | --namespace) [ "$#" -ge 2 ] || usage_error "$1 needs a value"; NAMESPACE=$2; shift 2 ;;
      -r | --release) [ "$#" -ge 2 ] || usage_error "$1 needs a value"; RELEASE=$2; shift 2 ;;
      -f | --values) [ "$#" -ge 2 ] || usage_error "$1 needs a value"; EXTRA_VALUES+=("$2"); shift 2 ;;
      --timeout) [ "$#" -ge 2 ] || usage_error "$1 needs a value"; TIMEOUT=$2; shift 2 ;;
      --tail) [ "$#" -ge 2 ] || usage_error "$1 needs a value"; TAIL=$2; shift 2 ;;
      -k | --keys-file) [ "$#" -ge 2 ] || usage_error "$1 needs a value"; KEYS_FILE=$2; shift 2 ;;
      --from-phase) [ "$#" -ge 2 ] || usage_error "$1 needs a value"; FROM_PHASE=$2; shift 2 ;;
      --skip-deps) SKIP_DEPS=1; shift ;;
      --keep-data) KEEP_DATA=1; shift ;;
      -y | --yes) export ASSUME_YES=1; shift ;;
      -h | --help) COMMAND=help; shift ;;
      -*) usage_error "unknown option: $1" ;;
      *)
        if [ -z "$COMMAND" ]; then COMMAND=$1; else ARGS+=("$1"); fi
        shift
        ;;
    esac
  done
  [ -n "$COMMAND" ] || usage_error "no command given"
  case "$ENVIRONMENT" in
    dev | prod) ;;
    *) usage_error "unknown environment '$ENVIRONMENT' (expected dev or prod)" ;;
  esac
  [[ "$TAIL" =~ ^[0-9]+$ ]] || usage_error "--tail needs a number, got '$TAIL'"
  phase_kind "$FROM_PHASE" >/dev/null || usage_error "unknown phase '$FROM_PHASE' (${INSTALL_PHASES[*]})"
  local f
  for f in "${EXTRA_VALUES[@]}"; do
    [ -r "$f" ] || usage_error "values file not readable: $f"
  done
}

values_args() {
  VALUES=(-f "$CHART_DIR/values.yaml" -f "$CHART_DIR/values-$ENVIRONMENT.yaml")
  local f
  for f in "${EXTRA_VALUES[@]}"; do VALUES+=(-f "$f"); done
}

# The upstream charts are vendored in charts/ with a matching Chart.lock: nothing to
# fetch. Refuse a checkout where they are missing rather than let helm fail later.
build_dependencies() {
  [ "$SKIP_DEPS" = 1 ] && return 0
  local name repo state missing=()
  while read -r name _ repo state; do
    if [ -z "$name" ] || [ "$name" = NAME ]; then continue; fi
    state=${state:-$repo}  # a local chart has no repository column
    case "$state" in ok | unpacked) ;; *) missing+=("$name") ;; esac
  done < <(helm dependency list "$CHART_DIR" 2>/dev/null)
  [ "${#missing[@]}" -eq 0 ] || die "$EXIT_FAILED" "charts missing from $CHART_DIR/charts: ${missing[*]}"
}

release_exists() {
  helm status "$RELEASE" --namespace "$NAMESPACE" >/dev/null 2>&1
}

# monitoring_args: MONITORING holds the --set flags for the cluster's Prometheus Operator
# CRDs (present or not).
monitoring_args() {
  local have=0
  kubectl get crd servicemonitors.monitoring.coreos.com >/dev/null 2>&1 && have=1
  [ "$have" = 1 ] || log "no ServiceMonitor CRD in the cluster: the upstream ServiceMonitors are left out"
  mapfile -t MONITORING < <(monitoring_set_args "$have")
}

# helm_phase PHASE: install (first phase) or upgrade the release with PHASE's components.
helm_phase() {
  local phase=$1 sets wait=(--wait)
  mapfile -t sets < <(phase_set_args "$phase")
  # Vault answers its readiness probe only once unsealed, which the next phase does.
  [ "$phase" = vault ] && wait=()
  if [ "$phase" = "${INSTALL_PHASES[0]}" ]; then
    helm install "$RELEASE" "$CHART_DIR" --namespace "$NAMESPACE" --create-namespace \
      "${VALUES[@]}" "${MONITORING[@]}" "${sets[@]}" "${wait[@]}" --timeout "$TIMEOUT"
  else
    helm upgrade "$RELEASE" "$CHART_DIR" --namespace "$NAMESPACE" \
      "${VALUES[@]}" "${MONITORING[@]}" "${sets[@]}" "${wait[@]}" --timeout "$TIMEOUT"
  fi
}

# wait_vault: the Vault agent injector answers and the Vault pods run (sealed).
wait_vault() {
  log "waiting for the Vault agent injector"
  kubectl wait --namespace "$NAMESPACE" --for=condition=Available deployment \
    -l "app.kubernetes.io/instance=$RELEASE" --timeout "$TIMEOUT" ||
    die "$EXIT_FAILED" "the Vault agent injector did not become available"
  log "waiting for the Vault servers to run"
  kubectl wait --namespace "$NAMESPACE" --for=jsonpath='{.status.phase}'=Running pod \
    -l app.kubernetes.io/name=vault,component=server --timeout "$TIMEOUT" ||
    die "$EXIT_FAILED" "Vault server pods are not running"
}

cmd_install() {
  require_tools helm kubectl
  require_cluster
  local phase started=0
  if [ "$FROM_PHASE" = "${INSTALL_PHASES[0]}" ] && release_exists; then
    die "$EXIT_FAILED" "release '$RELEASE' already exists in namespace '$NAMESPACE'; use '${0##*/} upgrade' (or --from-phase to resume an install)"
  fi
  build_dependencies
  values_args
  monitoring_args
  for phase in "${INSTALL_PHASES[@]}"; do
    [ "$phase" = "$FROM_PHASE" ] && started=1
    [ "$started" = 1 ] || continue
    log "phase $phase: '$RELEASE' ($ENVIRONMENT) in namespace '$NAMESPACE'"
    case "$(phase_kind "$phase")" in
      helm) helm_phase "$phase" || die "$EXIT_FAILED" "phase $phase failed; fix the cause, then: ${0##*/} install --from-phase $phase" ;;
      bootstrap)
        "$VAULT_BOOTSTRAP" all --namespace "$NAMESPACE" --db-namespace "$DB_NAMESPACE" --keys-file "$KEYS_FILE" ||
          die "$EXIT_FAILED" "phase $phase failed; fix the cause, then: ${0##*/} install --from-phase $phase"
        ;;
    esac
    if [ "$phase" = vault ]; then wait_vault; fi
  done
  log "installed. Keep $KEYS_FILE offline (unseal keys and root token). Check: ${0##*/} status"
}

cmd_upgrade() {
  require_tools helm kubectl
  require_cluster
  release_exists || die "$EXIT_FAILED" "release '$RELEASE' is not installed in namespace '$NAMESPACE'; use '${0##*/} install'"
  build_dependencies
  values_args
  monitoring_args
  log "upgrading '$RELEASE' ($ENVIRONMENT) in namespace '$NAMESPACE'"
  helm upgrade "$RELEASE" "$CHART_DIR" --namespace "$NAMESPACE" "${VALUES[@]}" "${MONITORING[@]}" \
    --timeout "$TIMEOUT" --atomic
}

cmd_uninstall() {
  require_tools helm kubectl
  require_cluster
  release_exists || die "$EXIT_FAILED" "release '$RELEASE' is not installed in namespace '$NAMESPACE'"
  if [ "$KEEP_DATA" = 1 ]; then
    confirm "Uninstall release '$RELEASE' from '$NAMESPACE' (data volumes are kept)?" ||
      die "$EXIT_FAILED" "aborted; nothing was removed"
  else
    confirm "Uninstall release '$RELEASE' and DELETE ALL DATA (PostgreSQL, Redis and Vault volumes, namespace '$DB_NAMESPACE')? Take a backup first." ||
      die "$EXIT_FAILED" "aborted; nothing was removed (use --keep-data to keep the volumes)"
  fi
  log "uninstalling '$RELEASE'"
  helm uninstall "$RELEASE" --namespace "$NAMESPACE" --wait
  if [ "$KEEP_DATA" = 1 ]; then
    log "kept PersistentVolumeClaims in '$NAMESPACE' and '$DB_NAMESPACE'"
    return 0
  fi
  log "deleting data volumes"
  kubectl delete pvc --namespace "$NAMESPACE" -l "app.kubernetes.io/instance=$RELEASE" --ignore-not-found
  kubectl delete namespace "$DB_NAMESPACE" --ignore-not-found --wait
}

cmd_status() {
  require_tools helm kubectl
  require_cluster
  helm status "$RELEASE" --namespace "$NAMESPACE" || warn "release '$RELEASE' not found in '$NAMESPACE'"
  local ns
  for ns in "$NAMESPACE" "$DB_NAMESPACE"; do
    printf '\n# pods in %s\n' "$ns"
    kubectl get pods --namespace "$ns" -o wide
    printf '\n# volumes in %s\n' "$ns"
    kubectl get pvc --namespace "$ns"
  done
}

# component -> "namespace selector"
component_selector() {
  case "$1" in
    vault) echo "$NAMESPACE app.kubernetes.io/name=vault" ;;
    zitadel) echo "$NAMESPACE app.kubernetes.io/name=zitadel" ;;
    blinkchamber) echo "$NAMESPACE app.kubernetes.io/name=blinkchamber-runtime" ;;
    postgresql) echo "$DB_NAMESPACE app.kubernetes.io/name=postgresql-ha" ;;
    redis) echo "$DB_NAMESPACE app.kubernetes.io/name=redis" ;;
    *) return 1 ;;
  esac
}

cmd_logs() {
  require_tools kubectl
  local components=("${ARGS[@]}") c ns sel
  [ "${#components[@]}" -gt 0 ] || components=(vault zitadel blinkchamber postgresql redis)
  for c in "${components[@]}"; do
    component_selector "$c" >/dev/null || usage_error "unknown component '$c' (vault, zitadel, blinkchamber, postgresql, redis)"
  done
  require_cluster
  for c in "${components[@]}"; do
    read -r ns sel < <(component_selector "$c")
    printf '\n# %s (%s, %s)\n' "$c" "$ns" "$sel"
    kubectl logs --namespace "$ns" -l "$sel" --all-containers --prefix --tail "$TAIL" || warn "no logs for $c"
  done
}

main() {
  parse_args "$@"
  case "$COMMAND" in
    install) cmd_install ;;
    upgrade) cmd_upgrade ;;
    uninstall) cmd_uninstall ;;
    status) cmd_status ;;
    logs) cmd_logs ;;
    help) usage ;;
    *) usage_error "unknown command '$COMMAND'" ;;
  esac
}

main "$@"
