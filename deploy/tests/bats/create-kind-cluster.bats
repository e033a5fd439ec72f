#!/usr/bin/env bats
# deploy/scripts/create-kind-cluster.sh
# shellcheck disable=SC2016  # fake bodies are code for the fakes, expanded when they run

load helpers

run_kind() {
  run bash "$SCRIPTS/create-kind-cluster.sh" "$@"
}

@test "help describes create and delete" {
  run_kind help
  [ "$status" -eq 0 ]
  [[ "$output" == *"create|delete|help"* ]]
}

@test "no container engine fails clearly" {
  fake kind
  fake kubectl
  run_kind
  [ "$status" -eq 3 ]
  [[ "$output" == *"no container engine found: kind needs Docker or Podman"* ]]
  not_called "^kind create"
}

@test "missing kind is named" {
  fake docker
  fake kubectl
  run_kind create
  [ "$status" -eq 3 ]
  [[ "$output" == *"not found on PATH: kind"* ]]
}

@test "a docker that does not answer fails clearly" {
  fake kind
  fake kubectl
  fake docker 'exit 1'
  run_kind create
  [ "$status" -eq 4 ]
  [[ "$output" == *"docker is installed but not running"* ]]
  not_called "^kind create"
}

@test "creates the cluster with docker and the bundled config" {
  fake kind
  fake kubectl
  fake docker
  run_kind
  [ "$status" -eq 0 ]
  called "^docker info$"
  called "^kind create cluster --name blinkchamber --config $SCRIPTS/kind-config.yaml --wait 180s$"
  called "^kubectl cluster-info --context kind-blinkchamber$"
}

@test "podman alone selects kind's podman provider" {
  fake kind 'echo "provider=${KIND_EXPERIMENTAL_PROVIDER:-docker}" >>"$CALLS"'
  fake kubectl
  fake podman
  run_kind create --name dev
  [ "$status" -eq 0 ]
  called "^podman info$"
  called "^kind create cluster --name dev "
  called "^provider=podman$"
}

@test "an existing cluster is left alone" {
  fake kind 'if [ "$1 $2" = "get clusters" ]; then echo other; echo blinkchamber; fi'
  fake kubectl
  fake docker
  run_kind create
  [ "$status" -eq 0 ]
  [[ "$output" == *"already exists"* ]]
  not_called "^kind create"
}

@test "delete removes an existing cluster" {
  fake kind 'if [ "$1 $2" = "get clusters" ]; then echo blinkchamber; fi'
  fake docker
  run_kind delete
  [ "$status" -eq 0 ]
  called "^kind delete cluster --name blinkchamber$"
}

@test "delete of a missing cluster does nothing" {
  fake kind
  fake docker
  run_kind delete
  [ "$status" -eq 0 ]
  not_called "^kind delete"
}

@test "an invalid cluster name is rejected" {
  run_kind --name "Bad Name"
  [ "$status" -eq 2 ]
  [[ "$output" == *"invalid cluster name"* ]]
}

@test "an unknown engine is rejected" {
  fake kind
  fake kubectl
  run_kind --engine lxc
  [ "$status" -eq 2 ]
  [[ "$output" == *"unknown container engine 'lxc'"* ]]
}

@test "a missing kind config is a usage error" {
  fake kind
  fake kubectl
  fake docker
  run_kind --config "$TEST_TMP/none.yaml"
  [ "$status" -eq 2 ]
  not_called "^kind create"
}
