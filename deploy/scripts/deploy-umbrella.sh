#!/usr/bin/env bash
# Install, upgrade, inspect and remove the BlinkChamber platform (the umbrella chart).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$SCRIPT_DIR/lib/common.sh"

CHART_DIR=${CHART_DIR:-$SCRIPT_DIR/../helm/blinkchamber}
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

usage() {
  cat <<USAGE
Usage: ${0##*/} [options] COMMAND [ARGS]

Commands:
  install            install the platform (fails if the release already exists)
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
      --skip-deps        do not run 'helm dependency build' before install/upgrade
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

build_dependencies() {
  [ "$SKIP_DEPS" = 1 ] && return 0
  log "fetching the pinned upstream charts (helm dependency build)"
  helm dependency build "$CHART_DIR" ||
    die "$EXIT_FAILED" "helm dependency build failed; run 'helm dependency update $CHART_DIR' with access to the chart repositories"
}

release_exists() {
  helm status "$RELEASE" --namespace "$NAMESPACE" >/dev/null 2>&1
}

cmd_install() {
  require_tools helm kubectl
  require_cluster
  if release_exists; then
    die "$EXIT_FAILED" "release '$RELEASE' already exists in namespace '$NAMESPACE'; use '${0##*/} upgrade'"
  fi
  build_dependencies
  values_args
  log "installing '$RELEASE' ($ENVIRONMENT) into namespace '$NAMESPACE'"
  helm install "$RELEASE" "$CHART_DIR" --namespace "$NAMESPACE" --create-namespace \
    "${VALUES[@]}" --timeout "$TIMEOUT"
  log "installed. Next: deploy/scripts/vault-bootstrap.sh all --namespace $NAMESPACE"
}

cmd_upgrade() {
  require_tools helm kubectl
  require_cluster
  release_exists || die "$EXIT_FAILED" "release '$RELEASE' is not installed in namespace '$NAMESPACE'; use '${0##*/} install'"
  build_dependencies
  values_args
  log "upgrading '$RELEASE' ($ENVIRONMENT) in namespace '$NAMESPACE'"
  helm upgrade "$RELEASE" "$CHART_DIR" --namespace "$NAMESPACE" "${VALUES[@]}" \
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
