#!/usr/bin/env bash
# Copies the monitoring sources into the two places that deploy them. Kustomize
# and Helm each read files only below their own root, so both keep a copy:
#
#   deploy/prometheus/strata-rules.yaml  -> deploy/k8s/components/monitoring/prometheusrule.yaml
#                                           (wrapped in a PrometheusRule)
#                                        -> helm/strata/files/strata-rules.yaml
#   deploy/grafana/*.json                -> deploy/k8s/components/monitoring/dashboards/
#                                        -> helm/strata/files/dashboards/
#
# Usage: deploy/k8s/sync-monitoring-files.sh           write the copies
#        deploy/k8s/sync-monitoring-files.sh --check   exit 1 if any copy is stale
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
mode=${1:-write}
case "$mode" in
  write | --check) ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

rules=$root/deploy/prometheus/strata-rules.yaml
for source in "$rules" "$root"/deploy/grafana/*.json; do
  [ -f "$source" ] || { echo "sync-monitoring-files: $source is missing" >&2; exit 1; }
done

wrapped_rules() {
  cat <<'HEADER'
# Generated from deploy/prometheus/strata-rules.yaml by
# deploy/k8s/sync-monitoring-files.sh; edit the source, then run the script.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: strata
  labels:
    app.kubernetes.io/name: strata
    app.kubernetes.io/component: monitoring
spec:
HEADER
  # The rule file's own comments stay in it; its content goes under spec.
  grep -v '^#' "$rules" | sed 's/^\(.\)/  \1/'
}

# target: generator output (a function name) or a file to copy.
stale=0
sync_one() {
  local target=$1 producer=$2
  local tmp
  tmp=$(mktemp)
  if declare -F "$producer" >/dev/null; then "$producer" >"$tmp"; else cp "$producer" "$tmp"; fi
  if [ "$mode" = --check ]; then
    if ! cmp -s "$tmp" "$target"; then
      echo "sync-monitoring-files: ${target#"$root"/} is out of date" >&2
      stale=1
    fi
  else
    mkdir -p "$(dirname "$target")"
    cp "$tmp" "$target"
  fi
  rm -f "$tmp"
}

sync_one "$root/deploy/k8s/components/monitoring/prometheusrule.yaml" wrapped_rules
sync_one "$root/helm/strata/files/strata-rules.yaml" "$rules"
for dashboard in "$root"/deploy/grafana/*.json; do
  name=$(basename "$dashboard")
  sync_one "$root/deploy/k8s/components/monitoring/dashboards/$name" "$dashboard"
  sync_one "$root/helm/strata/files/dashboards/$name" "$dashboard"
done

if [ "$stale" -ne 0 ]; then
  echo "sync-monitoring-files: run deploy/k8s/sync-monitoring-files.sh and commit the copies" >&2
  exit 1
fi
[ "$mode" = --check ] && echo "sync-monitoring-files: copies are up to date"
exit 0
