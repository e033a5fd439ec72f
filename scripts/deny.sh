#!/usr/bin/env bash
# The dependency policy of deny.toml: licences, bans (ring, rsa, duplicate versions),
# sources, and known advisories. Installs cargo-deny when missing.
#
# The advisory database is fetched from its git repository. When it cannot be fetched
# (a machine without access to it) and no earlier copy exists, the advisory check is
# reported as skipped, loudly, and the other checks still run; with a copy, the copy is
# used and its date printed.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deny --version >/dev/null 2>&1; then
  echo "installing cargo-deny"
  cargo install cargo-deny --locked --quiet
fi

cargo deny --locked check bans licenses sources

if cargo deny --locked fetch db >/dev/null 2>&1; then
  cargo deny --locked check advisories
elif compgen -G "${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/*/crates" >/dev/null; then
  db=$(dirname "$(compgen -G "${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/*/crates" | head -1)")
  echo "advisory database unreachable: checking against the copy in $db" \
    "(last commit $(git -C "$db" log -1 --format=%cs 2>/dev/null || echo unknown))"
  cargo deny --locked --offline check advisories
else
  echo "WARNING: advisory database unreachable and no local copy:" \
    "known advisories were NOT checked (run scripts/deny.sh with network access)" >&2
fi
