#!/usr/bin/env bash
# scripts/gpu-check.sh --dry-run on a machine without a GPU: exits 0, builds
# nothing, shows the configure / build / ctest -L gpu / benchmark commands it
# would run, and writes its report file. Usage: gpu_check_dry_run_test.sh ROOT
set -euo pipefail
ROOT="$1"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*"; echo "----- output -----"; cat "$TMP/out"; exit 1; }

"$ROOT/scripts/gpu-check.sh" --dry-run --build-dir "$TMP/build" --report "$TMP/report.txt" \
  > "$TMP/out" 2>&1 || fail "dry run exited $?"
for expected in "+ cmake -S $ROOT -B $TMP/build" "-DSTRATA_WITH_CUDA=ON" "-DSTRATA_CUDA_ARCHS=" \
    "--target cuda_backend_test cuda_model_test cuda_worker_test nccl_communicator_test strata-gpu-bench" \
    "+ ctest --test-dir $TMP/build -L gpu" "+ $TMP/build/bench/gpu/strata-gpu-bench" "nvcc:" \
    "gpu:"; do
  grep -qF -- "$expected" "$TMP/out" || fail "output lacks '$expected'"
done
[ ! -e "$TMP/build/CMakeCache.txt" ] || fail "a dry run configured a build"
grep -q "RESULT: dry run" "$TMP/report.txt" || fail "report lacks the dry-run result line"

# An unknown flag is refused with a message, not ignored.
if "$ROOT/scripts/gpu-check.sh" --no-such-flag > "$TMP/out" 2>&1; then fail "unknown flag accepted"; fi
grep -q "unknown argument '--no-such-flag'" "$TMP/out" || fail "no message for an unknown flag"
echo "PASS"
