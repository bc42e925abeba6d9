#!/usr/bin/env bash
# Installs every Debian package Strata's build, tests and `make run` need.
# Idempotent: when everything is present it only checks (about a second).
# Runs apt-get through sudo when not root.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libgrpc++-dev protobuf-compiler-grpc protobuf-compiler libprotobuf-dev grpc-proto
  prometheus-cpp-dev libgloo-dev libopenblas-dev nlohmann-json3-dev libcli11-dev
  libspdlog-dev libabsl-dev libre2-dev libpcre2-dev libgtest-dev libgmock-dev libbenchmark-dev
  prometheus iproute2 curl nginx-light
  golang-go golang-github-masterminds-sprig-dev golang-k8s-sigs-yaml-dev
  golang-github-xeipuuv-gojsonschema-dev
)
# Node.js runs the deployment-manifest validators. Machines that carry their
# own Node.js build (with npm bundled) keep it: Debian's npm conflicts with it.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1
  fi
fi
echo "install-deps: installing ${missing[*]}"
# prometheus and nginx ship daemons that their packages would start; tests
# start their own on 127.0.0.1. A policy-rc.d that refuses service starts
# keeps them stopped while installing (left alone if the machine has one).
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  added_policy=1
fi
remove_policy() { [ "$added_policy" -eq 1 ] && $SUDO rm -f "$policy"; return 0; }
trap remove_policy EXIT
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
# Nor do they start at the next boot (systemd machines only).
if [ -d /run/systemd/system ]; then
  for service in nginx prometheus; do
    if printf '%s\n' "${missing[@]}" | grep -qx "$service\(-light\)\?"; then
      $SUDO systemctl disable --now "$service" >/dev/null 2>&1 || true
    fi
  done
fi
