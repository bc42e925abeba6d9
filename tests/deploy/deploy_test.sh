#!/usr/bin/env bash
# The offline deployment checks behind the `deploy` ctest label
# (tests/deploy/CMakeLists.txt runs one subcommand per test):
#
#   kustomize OVERLAY   render deploy/k8s/overlays/OVERLAY with kubectl, validate it
#   selftest            break the rendered cpu-dev overlay rule by rule; each must be caught
#   helm VALUES         render helm/strata (VALUES: default, or a file in
#                       helm/strata/examples without .yaml) with helmrender, validate it
#   helm-values         examples pass values.schema.json; broken values are refused
#                       with a message per mistake; NOTES.txt renders
#
# Environment (set by CMake): STRATA_DEPLOY_NODE_DIR (validator packages),
# STRATA_DEPLOY_WORK_DIR (rendered output), STRATA_HELMRENDER (binary).
# Exit 77 = skipped (a tool is missing), with the reason on stdout.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
work=${STRATA_DEPLOY_WORK_DIR:?}
mkdir -p "$work"

skip() { echo "SKIP: $*"; exit 77; }

need_node() {
  command -v node >/dev/null 2>&1 || skip "node is not installed (Debian: nodejs)"
  [ -d "${STRATA_DEPLOY_NODE_DIR:?}/node_modules/kubernetes-models" ] ||
    skip "validator packages are not installed in $STRATA_DEPLOY_NODE_DIR (see the deploy_node_setup test)"
}

need_kubectl() {
  command -v kubectl >/dev/null 2>&1 || skip "kubectl is not installed; it renders the kustomize overlays"
}

need_helmrender() {
  [ -x "${STRATA_HELMRENDER:?}" ] || skip "helmrender was not built (see the deploy_helmrender_build test)"
}

validate() {
  node "$root/tests/deploy/validate/validate.mjs" --node-dir "$STRATA_DEPLOY_NODE_DIR" "$@"
}

render_overlay() {
  local overlay=$1 out=$2
  [ -f "$root/deploy/k8s/overlays/$overlay/kustomization.yaml" ] ||
    { echo "no overlay deploy/k8s/overlays/$overlay" >&2; exit 1; }
  kubectl kustomize "$root/deploy/k8s/overlays/$overlay" >"$out"
  echo "rendered deploy/k8s/overlays/$overlay: $(grep -c '^kind:' "$out") objects -> $out"
}

render_chart() {
  local out=$1; shift
  "$STRATA_HELMRENDER" --chart "$root/helm/strata" --release strata --namespace strata "$@" >"$out"
  echo "rendered helm/strata $*: $(grep -c '^kind:' "$out") objects -> $out"
}

# Runs "$@", which must fail, and requires each expected text in its output.
expect_refusal() {
  local expected=$1; shift
  local output status=0
  output=$("$@" 2>&1) || status=$?
  if [ "$status" -eq 0 ]; then
    echo "FAIL: accepted, but must be refused: $*" >&2
    exit 1
  fi
  local missing=0
  while IFS= read -r text; do
    [ -z "$text" ] && continue
    if ! grep -qF -- "$text" <<<"$output"; then
      echo "FAIL: the refusal does not say: $text" >&2
      missing=1
    fi
  done <<<"$expected"
  echo "$output"
  [ "$missing" -eq 0 ] || exit 1
}

command=${1:-}
case "$command" in
  kustomize)
    need_kubectl; need_node
    out=$work/kustomize-$2.yaml
    render_overlay "$2" "$out"
    validate --require-monitoring "$out"
    ;;
  selftest)
    need_kubectl; need_node
    out=$work/kustomize-cpu-dev.selftest.yaml
    render_overlay cpu-dev "$out"
    node "$root/tests/deploy/validate/selftest.mjs" --node-dir "$STRATA_DEPLOY_NODE_DIR" "$out"
    ;;
  helm)
    need_helmrender; need_node
    out=$work/helm-$2.yaml
    if [ "$2" = default ]; then
      render_chart "$out"
      validate "$out"
    else
      render_chart "$out" -f "$root/helm/strata/examples/$2.yaml"
      validate --require-monitoring "$out"
    fi
    ;;
  helm-values)
    need_helmrender
    for example in "$root"/helm/strata/examples/*.yaml; do
      "$STRATA_HELMRENDER" --chart "$root/helm/strata" --validate-only -f "$example"
    done
    expect_refusal "values don't meet the specifications of the schema(s)
- images.pullPolicy: images.pullPolicy must be one of the following: \"Always\", \"IfNotPresent\", \"Never\"
- router.policy: router.policy must be one of the following: \"round_robin\", \"least_request\", \"prefix_affinity\"
- router.autoscaling.maxReplicas: Must be greater than or equal to 1
- models.0.name: Does not match pattern
- models.0: Additional property replica is not allowed
- models.0.tp: Must be greater than or equal to 1
- models.0.source.volume: Must have at most 1 properties
- models.0.source.path: Does not match pattern
- models.0.shmSize: Does not match pattern
- models.0.probes.startup.periodSeconds: Invalid type. Expected: integer, given: string" \
      "$STRATA_HELMRENDER" --chart "$root/helm/strata" -f "$root/tests/deploy/testdata/broken-values.yaml"
    expect_refusal "execution error at (strata/templates/leaderworkerset.yaml
models[0] (odd): tp 3 x pp 1 = 3 ranks do not fill whole pods of gpusPerPod 2 GPUs" \
      "$STRATA_HELMRENDER" --chart "$root/helm/strata" -f "$root/tests/deploy/testdata/values-bad-shape.yaml"
    notes=$("$STRATA_HELMRENDER" --chart "$root/helm/strata" --release demo --namespace serving --notes \
      -f "$root/helm/strata/examples/cpu-dev.yaml")
    echo "$notes"
    for text in "kubectl -n serving port-forward service/demo-strata-stories260k 50050:50050" \
        "strata generate --server 127.0.0.1:50050" "2 replica(s) of tp 2 x pp 2" "(4 pod(s) per replica)"; do
      grep -qF -- "$text" <<<"$notes" || { echo "FAIL: NOTES.txt does not say: $text" >&2; exit 1; }
    done
    echo "values checks passed"
    ;;
  *)
    echo "usage: deploy_test.sh kustomize OVERLAY | selftest | helm VALUES | helm-values" >&2
    exit 2
    ;;
esac
