#!/usr/bin/env bash
# Resolve the Dockerfile's base image tags (BUILDER_IMAGE, RUNTIME_IMAGE) to the digests
# they point at now, and print the `--build-arg` flags that pin a build to them:
#
#   docker build $(scripts/pin-image-digests.sh) -t blinkchamber:0.1.0 .
#
# Uses `docker buildx imagetools inspect`, or `crane digest` when docker buildx is not
# available. Needs access to the registries. A digest names the multi-platform index, so
# the pinned build still picks the right image for each platform.
set -euo pipefail

DOCKERFILE=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/Dockerfile}

case "${1:-}" in
  -h | --help | help)
    echo "Usage: ${0##*/} [DOCKERFILE]   (default: the repository's Dockerfile)"
    exit 0
    ;;
esac
[ -r "$DOCKERFILE" ] || { echo "${0##*/}: cannot read $DOCKERFILE" >&2; exit 2; }

# The default of `ARG NAME=value` in the Dockerfile.
default_of() {
  sed -n "s/^ARG[[:space:]]\{1,\}$1=\([^[:space:]]\{1,\}\).*/\1/p" "$DOCKERFILE" | head -n 1
}

digest_of() {
  local digest
  if docker buildx version >/dev/null 2>&1; then
    digest=$(docker buildx imagetools inspect --format '{{json .Manifest.Digest}}' "$1")
    digest=${digest//\"/}
  elif command -v crane >/dev/null 2>&1; then
    digest=$(crane digest "$1")
  else
    echo "${0##*/}: neither docker buildx nor crane is installed" >&2
    exit 3
  fi
  case "$digest" in
    sha256:*) printf '%s\n' "$digest" ;;
    *) echo "${0##*/}: no digest for $1 (got '$digest')" >&2; exit 1 ;;
  esac
}

flags=()
for arg in BUILDER_IMAGE RUNTIME_IMAGE; do
  image=$(default_of "$arg")
  [ -n "$image" ] || { echo "${0##*/}: no 'ARG $arg=' default in $DOCKERFILE" >&2; exit 2; }
  image=${image%%@*} # already pinned: resolve the tag again
  digest=$(digest_of "$image")
  echo "${0##*/}: $image -> $digest" >&2
  flags+=("--build-arg" "$arg=$image@$digest")
done
printf '%s\n' "${flags[*]}"
