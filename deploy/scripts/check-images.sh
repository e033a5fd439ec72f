#!/usr/bin/env bash
# Confirm that every image in deploy/images.yaml is still published, with skopeo or crane
# (whichever is installed), and say which are not. Needs access to the registries; the
# offline tests only check the list against the rendered chart and the dates.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$SCRIPT_DIR/lib/common.sh"

LIST=${1:-$SCRIPT_DIR/../images.yaml}

case "${1:-}" in
  -h | --help | help)
    echo "Usage: ${0##*/} [IMAGES_YAML]   (default: deploy/images.yaml)"
    exit 0
    ;;
esac
[ -r "$LIST" ] || usage_error "image list not readable: $LIST"

inspect() {
  if command -v skopeo >/dev/null 2>&1; then
    skopeo inspect --raw "docker://$1" >/dev/null 2>&1
  elif command -v crane >/dev/null 2>&1; then
    crane manifest "$1" >/dev/null 2>&1
  else
    die "$EXIT_MISSING_TOOL" "required tool(s) not found on PATH: skopeo or crane"
  fi
}

unpublished=0
while IFS= read -r image; do
  case "$image" in
    blinkchamber:dev) log "skip $image (built locally and loaded into kind)"; continue ;;
  esac
  if inspect "$image"; then
    log "published: $image"
  else
    warn "NOT published (or unreachable): $image"
    unpublished=$((unpublished + 1))
  fi
done < <(sed -n 's/^[[:space:]]*-[[:space:]]*image:[[:space:]]*//p' "$LIST")
[ "$unpublished" -eq 0 ] || die "$EXIT_FAILED" "$unpublished image(s) not found; fix the chart values and $LIST"
log "every image is published; set today's date as \`checked\` in $LIST"
