#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian/Ubuntu machine.
#
# Tests start their own redis-server / redis-sentinel processes on free loopback ports,
# so the two binaries must be installed; they are installed from the distribution
# packages when missing. Then: every cargo test (unit, integration, doc), the HTTP
# contract test (tests/contract/run.sh: schemathesis and a generated client against
# `serve`; its tools come from the Python package index), the browser test of the operator
# console (tests/console/run.sh: Debian's Chromium, installed when missing, driven by
# playwright-core from the npm registry), and the deployment tests (Helm chart, scripts)
# when deploy/ is present.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} from the distribution packages"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo test --locked

bash tests/contract/run.sh

bash tests/console/run.sh

if [ -f deploy/tests/run.sh ]; then
  bash deploy/tests/run.sh
fi
