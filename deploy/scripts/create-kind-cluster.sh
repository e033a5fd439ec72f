#!/usr/bin/env bash
# Create (or delete) the local kind cluster used with values-dev.yaml.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$SCRIPT_DIR/lib/common.sh"

CLUSTER_NAME=${KIND_CLUSTER_NAME:-blinkchamber}
KIND_CONFIG=${KIND_CONFIG:-$SCRIPT_DIR/kind-config.yaml}
ENGINE=${CONTAINER_ENGINE:-}
WAIT=${KIND_WAIT:-180s}

usage() {
  cat <<USAGE
Usage: ${0##*/} [options] [create|delete|help]

Creates a one-node kind cluster with ports 80/443 mapped for ingress-nginx
(deploy/scripts/kind-config.yaml). Creating an existing cluster does nothing.

Options:
  --name NAME        cluster name (default: blinkchamber)
  --config FILE      kind configuration (default: kind-config.yaml beside this script)
  --engine ENGINE    docker or podman (default: the first one found)
USAGE
}

# Pick the container engine and check that it answers.
select_engine() {
  if [ -z "$ENGINE" ]; then
    if command -v docker >/dev/null 2>&1; then
      ENGINE=docker
    elif command -v podman >/dev/null 2>&1; then
      ENGINE=podman
    else
      die "$EXIT_MISSING_TOOL" "no container engine found: kind needs Docker or Podman on PATH"
    fi
  fi
  case "$ENGINE" in
    docker | podman) ;;
    *) usage_error "unknown container engine '$ENGINE' (expected docker or podman)" ;;
  esac
  command -v "$ENGINE" >/dev/null 2>&1 || die "$EXIT_MISSING_TOOL" "container engine '$ENGINE' not found on PATH"
  "$ENGINE" info >/dev/null 2>&1 ||
    die "$EXIT_UNREACHABLE" "$ENGINE is installed but not running (or this user may not use it)"
  if [ "$ENGINE" = podman ]; then
    export KIND_EXPERIMENTAL_PROVIDER=podman
  fi
}

cluster_exists() {
  kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"
}

cmd_create() {
  require_tools kind kubectl
  select_engine
  [ -r "$KIND_CONFIG" ] || usage_error "kind configuration not readable: $KIND_CONFIG"
  if cluster_exists; then
    log "kind cluster '$CLUSTER_NAME' already exists"
  else
    log "creating kind cluster '$CLUSTER_NAME' with $ENGINE"
    kind create cluster --name "$CLUSTER_NAME" --config "$KIND_CONFIG" --wait "$WAIT"
  fi
  kubectl cluster-info --context "kind-$CLUSTER_NAME"
  log "next: deploy/scripts/deploy-umbrella.sh install --env dev"
}

cmd_delete() {
  require_tools kind
  select_engine
  if ! cluster_exists; then
    log "kind cluster '$CLUSTER_NAME' does not exist"
    return 0
  fi
  kind delete cluster --name "$CLUSTER_NAME"
}

main() {
  local command=""
  while [ "$#" -gt 0 ]; do
    case "$1" in
      --name) [ "$#" -ge 2 ] || usage_error "$1 needs a value"; CLUSTER_NAME=$2; shift 2 ;;
      --config) [ "$#" -ge 2 ] || usage_error "$1 needs a value"; KIND_CONFIG=$2; shift 2 ;;
      --engine) [ "$#" -ge 2 ] || usage_error "$1 needs a value"; ENGINE=$2; shift 2 ;;
      -h | --help) command=help; shift ;;
      -*) usage_error "unknown option: $1" ;;
      *) [ -z "$command" ] || usage_error "unexpected argument: $1"; command=$1; shift ;;
    esac
  done
  [[ "$CLUSTER_NAME" =~ ^[a-z0-9][a-z0-9-]*$ ]] || usage_error "invalid cluster name '$CLUSTER_NAME'"
  case "${command:-create}" in
    create) cmd_create ;;
    delete) cmd_delete ;;
    help) usage ;;
    *) usage_error "unknown command '$command'" ;;
  esac
}

main "$@"
