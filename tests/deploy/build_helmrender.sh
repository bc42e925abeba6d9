#!/usr/bin/env bash
# Builds tests/deploy/helmrender with Debian's Go packages in GOPATH mode
# (no module download): golang-go, golang-github-masterminds-sprig-dev,
# golang-k8s-sigs-yaml-dev and golang-github-xeipuuv-gojsonschema-dev put
# their sources under /usr/share/gocode.
#
# Usage: build_helmrender.sh OUTPUT [go test]   exit 77 (skipped) without them
set -euo pipefail

out=${1:?usage: build_helmrender.sh OUTPUT [test]}
source_dir=$(cd "$(dirname "$0")/helmrender" && pwd)
gocode=${STRATA_GOCODE:-/usr/share/gocode}

command -v go >/dev/null 2>&1 || { echo "SKIP: go is not installed (Debian: golang-go)"; exit 77; }
for package in github.com/Masterminds/sprig sigs.k8s.io/yaml github.com/xeipuuv/gojsonschema; do
  if [ ! -d "$gocode/src/$package" ]; then
    echo "SKIP: $gocode/src/$package is missing (Debian: golang-github-masterminds-sprig-dev," \
      "golang-k8s-sigs-yaml-dev, golang-github-xeipuuv-gojsonschema-dev)"
    exit 77
  fi
done

export GO111MODULE=off GOPATH=$gocode GOFLAGS=
# Go's build cache: the user's (reused between builds) unless there is no home.
if [ -z "${GOCACHE:-}" ] && [ -z "${HOME:-}" ]; then export GOCACHE=$(dirname "$out")/go-build-cache; fi
cd "$source_dir"
if [ "${2:-}" = test ]; then
  go test -count=1 -v .
else
  go build -o "$out" .
  echo "built $out"
fi
