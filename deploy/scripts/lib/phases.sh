#!/usr/bin/env bash
# The install phases of the umbrella chart, shared by deploy-umbrella.sh (which runs them)
# and the offline install check in deploy/tests (which renders and evaluates them).
# Sourced, never run.
#
# A first install on an empty cluster cannot be one `helm install`: PostgreSQL, Redis and
# ZITADEL read Secrets that vault-bootstrap.sh creates once Vault runs, ZITADEL's init and
# setup Jobs are pre-install/pre-upgrade hooks that need PostgreSQL up, and the
# Certificates (Vault's TLS in production, the public host names) need cert-manager's
# CRDs and webhook. So the release grows in phases:
#   1. infrastructure   helm install --wait: cert-manager (+ CRDs), ingress-nginx, the
#                       platform's namespaces, NetworkPolicies and Vault policy ConfigMap
#   2. vault            helm upgrade: + Vault and its TLS certificates (no --wait: Vault is
#                       ready only once unsealed)
#   3. vault-bootstrap  vault-bootstrap.sh all: init, unseal, auth, policies, secrets
#   4. data             helm upgrade --wait: + PostgreSQL HA and Redis
#   5. applications     helm upgrade --wait: + ZITADEL (its Jobs run as pre-upgrade hooks,
#                       against a running database) and the BlinkChamber runtime
# Later `upgrade`s render everything at once: every phase's objects then exist.

# shellcheck disable=SC2034  # used by the scripts that source this file
INSTALL_PHASES=(infrastructure vault vault-bootstrap data applications)

# phase_kind PHASE: "helm" (a helm install/upgrade) or "bootstrap" (vault-bootstrap.sh).
phase_kind() {
  case "$1" in
    infrastructure | vault | data | applications) echo helm ;;
    vault-bootstrap) echo bootstrap ;;
    *) return 1 ;;
  esac
}

# phase_set_args PHASE: the --set flags (one word per line) that hold back the components
# of later phases. The last phase adds nothing: the values decide.
phase_set_args() {
  local off=()
  case "$1" in
    infrastructure) off=(vault postgresql-ha redis zitadel blinkchamber-runtime) ;;
    vault) off=(postgresql-ha redis zitadel blinkchamber-runtime) ;;
    data) off=(zitadel blinkchamber-runtime) ;;
    applications) ;;
    *) return 1 ;;
  esac
  local c
  for c in "${off[@]}"; do printf '%s\n' --set "$c.enabled=false"; done
}

# monitoring_set_args HAVE_SERVICEMONITOR_CRD(1|0): the upstream charts render their
# ServiceMonitors without asking whether the cluster knows the kind; without the
# Prometheus Operator's CRD they are turned off here (the platform's own PrometheusRule
# and ServiceMonitors check .Capabilities themselves).
monitoring_set_args() {
  [ "$1" = 1 ] && return 0
  printf '%s\n' --set redis.metrics.serviceMonitor.enabled=false \
    --set postgresql-ha.metrics.serviceMonitor.enabled=false \
    --set zitadel.metrics.serviceMonitor.enabled=false \
    --set vault.serverTelemetry.serviceMonitor.enabled=false
}

# The Kubernetes objects vault-bootstrap.sh creates (KIND/NAMESPACE/NAME; NAMESPACE is
# "release" or "database"); the install check lets later phases refer to them.
BOOTSTRAP_CREATES=(
  Secret/database/postgresql-ha-credentials
  Secret/database/postgresql-ha-pgpool-credentials
  Secret/database/postgresql-ha-pgpool-custom-users
  Secret/database/redis-credentials
  Secret/release/zitadel-masterkey
  Secret/release/zitadel-db-credentials
)
