#!/usr/bin/env bash
# Every flag the deployment files pass to strata-worker and strata-router is
# one those binaries accept (their --help lists it): the Helm chart and its
# examples, the kustomize base, and the flags strata-launch-ranks adds.
#
# Usage: manifest_flags_test.sh WORKER_BINARY ROUTER_BINARY
set -uo pipefail

worker=$1
router=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
worker_help=$("$worker" --help) || { echo "FAIL: $worker --help"; exit 1; }
router_help=$("$router" --help) || { echo "FAIL: $router --help"; exit 1; }
failures=0

# check BINARY_NAME HELP_TEXT FILE FLAG
check() {
  local name=$1 help=$2 file=$3 flag=${4%%=*}
  if ! grep -qE -- "(^|[ ,])${flag}([ ,=]|$)" <<<"$help"; then
    echo "FAIL: $file passes $flag to $name, which does not accept it"
    failures=$((failures + 1))
  fi
}

# Worker containers run `strata-launch-ranks LAUNCHER-FLAGS -- strata-worker
# FLAGS`: the worker's flags are the "- --x" items after the "- --" item.
for file in "$root"/helm/strata/templates/_helpers.tpl "$root"/deploy/k8s/base/worker-*.yaml; do
  while read -r flag; do
    check strata-worker "$worker_help" "${file#"$root"/}" "$flag"
  done < <(awk '/^[[:space:]]*- --[[:space:]]*$/ { after = 1; next }
               after && /^[[:space:]]*- --[a-z]/ { sub(/^[[:space:]]*- /, ""); print; next }
               after && !/^[[:space:]]*(- |\{\{|#)/ { after = 0 }' "$file")
done
# Extra worker flags in the chart's values and examples.
for file in "$root"/helm/strata/values.yaml "$root"/helm/strata/examples/*.yaml; do
  while read -r flag; do
    check strata-worker "$worker_help" "${file#"$root"/}" "$flag"
  done < <(awk '/extraArgs:/ { args = 1; next }
               args && /^[[:space:]]*- --/ { sub(/^[[:space:]]*- /, ""); print; next }
               args { args = 0 }' "$file")
done
# What strata-launch-ranks adds to each rank.
for flag in --local-rank --listen --metrics-listen; do
  check strata-worker "$worker_help" deploy/docker/strata-launch-ranks "$flag"
done
# Router containers: every "- --x" item.
for file in "$root"/helm/strata/templates/router.yaml "$root"/deploy/k8s/base/router-*.yaml; do
  while read -r flag; do
    check strata-router "$router_help" "${file#"$root"/}" "$flag"
  done < <(grep -E '^[[:space:]]*- --[a-z]' "$file" | sed -E 's/^[[:space:]]*- //')
done

# The check itself must catch a flag that does not exist.
if ( failures=0; check strata-worker "$worker_help" self-test --no-such-flag >/dev/null; \
     [ "$failures" -eq 0 ] ); then
  echo "FAIL: the check accepted --no-such-flag"
  failures=$((failures + 1))
fi

if [ "$failures" -gt 0 ]; then
  echo "$failures problem(s)"
  exit 1
fi
echo "PASS: every deployment flag is accepted by the binaries"
