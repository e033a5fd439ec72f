#!/usr/bin/env bats
# deploy/scripts/check-images.sh
# shellcheck disable=SC2016  # fake bodies are code for the fakes, expanded when they run

load helpers

write_list() {
  cat >"$TEST_TMP/images.yaml" <<'YAML'
images:
  - image: quay.io/jetstack/cert-manager-controller:v1.17.2
    checked: 2026-11-30
  - image: bitnamilegacy/redis:8.0.1-debian-12-r1
    checked: 2026-11-30
  - image: blinkchamber:dev
    checked: 2026-11-30
YAML
}

@test "check-images: every listed image inspected with skopeo, the local dev image skipped" {
  write_list
  fake skopeo
  run bash "$SCRIPTS/check-images.sh" "$TEST_TMP/images.yaml"
  [ "$status" -eq 0 ]
  called "^skopeo inspect --raw docker://quay.io/jetstack/cert-manager-controller:v1.17.2$"
  called "^skopeo inspect --raw docker://bitnamilegacy/redis:8.0.1-debian-12-r1$"
  not_called "blinkchamber:dev"
}

@test "check-images: an unpublished image is named and fails the run" {
  write_list
  fake skopeo 'case "$*" in *redis*) exit 1 ;; esac'
  run bash "$SCRIPTS/check-images.sh" "$TEST_TMP/images.yaml"
  [ "$status" -eq 1 ]
  [[ "$output" == *"NOT published (or unreachable): bitnamilegacy/redis:8.0.1-debian-12-r1"* ]]
  [[ "$output" == *"1 image(s) not found"* ]]
}

@test "check-images: crane when skopeo is missing, and a clear error without either" {
  write_list
  fake crane
  run bash "$SCRIPTS/check-images.sh" "$TEST_TMP/images.yaml"
  [ "$status" -eq 0 ]
  called "^crane manifest quay.io/jetstack/cert-manager-controller:v1.17.2$"
  rm "$FAKE_BIN/crane"
  run bash "$SCRIPTS/check-images.sh" "$TEST_TMP/images.yaml"
  [ "$status" -eq 3 ]
  [[ "$output" == *"skopeo or crane"* ]]
}

@test "check-images: an unreadable list is a usage error" {
  run bash "$SCRIPTS/check-images.sh" "$TEST_TMP/nope.yaml"
  [ "$status" -eq 2 ]
}
