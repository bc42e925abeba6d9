#!/usr/bin/env bash
# One command that proves the CUDA backend on a fresh GPU machine (CUDA
# toolkit, CMake and the project's C++ packages present; no network, no apt):
#   1. configures a build for the GPU's own architecture only and builds just
#      the GPU tests and the GPU benchmark;
#   2. runs the ctest label "gpu" (kernel parity, model parity, a worker
#      process serving from the GPU through the CUDA backend module, NCCL);
#   3. runs strata-gpu-bench (Llama-3-8B shape, random BF16 weights);
#   4. writes a short report (figures + pass/fail) to a file and stdout.
# Meant to finish in under 5 minutes on an H100 (most of it is the build).
#
# Usage: scripts/gpu-check.sh [--dry-run] [--build-dir DIR] [--report FILE]
#                             [--archs LIST] [--jobs N] [--bench-args "..."]
#   --dry-run   show what would run and which tools were found; build nothing.
# Exit status: 0 when every step passed (or a dry run), 1 otherwise.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="$ROOT/build-gpu-check"
REPORT=""
ARCHS=""
DRY_RUN=0
JOBS="$(nproc 2>/dev/null || echo 4)"
BENCH_ARGS=""

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --build-dir) BUILD_DIR="$2"; shift ;;
    --report) REPORT="$2"; shift ;;
    --archs) ARCHS="$2"; shift ;;
    --jobs) JOBS="$2"; shift ;;
    --bench-args) BENCH_ARGS="$2"; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$REPORT" ] || REPORT="$BUILD_DIR/gpu-check-report.txt"

LINES=()
FAILED=0
note() { echo "gpu-check: $*"; LINES+=("$*"); }
step_result() {  # name, status
  if [ "$DRY_RUN" -eq 1 ]; then note "PLAN  $1"; return; fi
  if [ "$2" -eq 0 ]; then note "PASS  $1"; else note "FAIL  $1 (exit $2)"; FAILED=1; fi
}
run() {  # prints, then runs unless dry
  echo "+ $*"
  [ "$DRY_RUN" -eq 1 ] && return 0
  "$@"
}
write_report() {
  mkdir -p "$(dirname "$REPORT")"
  {
    echo "strata gpu-check, $(date -u +%Y-%m-%dT%H:%M:%SZ)$([ "$DRY_RUN" -eq 1 ] && echo ' (dry run)')"
    printf '%s\n' "${LINES[@]}"
    if [ "$DRY_RUN" -eq 1 ]; then echo "RESULT: dry run, nothing built or run"
    elif [ "$FAILED" -eq 0 ]; then echo "RESULT: PASS"; else echo "RESULT: FAIL"; fi
  } > "$REPORT"
  echo "----- report ($REPORT) -----"
  cat "$REPORT"
}

# ---- What this machine has ----------------------------------------------------
NVCC="$(command -v nvcc || true)"
[ -n "$NVCC" ] || { [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc; }
if [ -n "$NVCC" ]; then
  note "nvcc: $NVCC ($("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'))"
  export PATH="$(dirname "$NVCC"):$PATH"
else
  note "nvcc: not found"
fi
if command -v cmake >/dev/null; then
  note "cmake: $(cmake --version | head -1)"
else
  note "cmake: not found"
fi
GENERATOR=()
command -v ninja >/dev/null && GENERATOR=(-G Ninja)
GPU_LINE=""
if command -v nvidia-smi >/dev/null && GPU_LINE="$(nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)" && [ -n "$GPU_LINE" ]; then
  note "gpu: $GPU_LINE"
  if [ -z "$ARCHS" ]; then
    ARCHS="$(echo "$GPU_LINE" | awk -F', ' '{gsub(/\./, "", $2); print $2}')"
  fi
else
  GPU_LINE=""
  note "gpu: none visible (nvidia-smi missing or reports no device)"
fi
[ -n "$ARCHS" ] || ARCHS="90"
note "architectures: $ARCHS; build dir: $BUILD_DIR; jobs: $JOBS"

if [ "$DRY_RUN" -eq 0 ]; then
  if [ -z "$NVCC" ] || ! command -v cmake >/dev/null; then
    note "FAIL  toolchain: nvcc and cmake are both required"
    FAILED=1; write_report; exit 1
  fi
  if [ -z "$GPU_LINE" ]; then
    note "FAIL  no GPU visible: the gpu tests would only skip"
    FAILED=1; write_report; exit 1
  fi
fi

# ---- 1. Build only what the check needs -----------------------------------------
TARGETS=(cuda_backend_test cuda_model_test cuda_worker_test nccl_communicator_test strata-gpu-bench)
start=$SECONDS
configure=(cmake -S "$ROOT" -B "$BUILD_DIR" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release
  -DSTRATA_WITH_CUDA=ON "-DSTRATA_CUDA_ARCHS=$ARCHS" -DSTRATA_BUILD_TESTS=ON
  -DSTRATA_BUILD_BENCH=ON)
echo "+ ${configure[*]}"
if [ "$DRY_RUN" -eq 0 ]; then
  mkdir -p "$BUILD_DIR"
  "${configure[@]}" > "$BUILD_DIR/gpu-check-configure.log" 2>&1
  if ! grep -q "strata: CUDA [0-9]" "$BUILD_DIR/gpu-check-configure.log" || grep -q "CMake Error" "$BUILD_DIR/gpu-check-configure.log"; then
    tail -20 "$BUILD_DIR/gpu-check-configure.log"
    step_result "configure (log: $BUILD_DIR/gpu-check-configure.log)" 1
    write_report; exit 1
  fi
  # Build the targets that exist (the benchmark needs bench/gpu in the build).
  available=()
  for t in "${TARGETS[@]}"; do
    if cmake --build "$BUILD_DIR" --target help 2>/dev/null | grep -qE "(^|[ /])$t(:| |$)"; then
      available+=("$t")
    else
      note "WARN  target $t is not part of this build"
    fi
  done
  [ "${#available[@]}" -gt 0 ] || { step_result "build: no GPU targets" 1; write_report; exit 1; }
  TARGETS=("${available[@]}")
fi
run cmake --build "$BUILD_DIR" -j "$JOBS" --target "${TARGETS[@]}"
status=$?
step_result "build ${TARGETS[*]} ($((SECONDS - start)) s)" $status
[ $status -eq 0 ] || { write_report; exit 1; }

# ---- 2. The gpu tests ------------------------------------------------------------------
start=$SECONDS
ctest_log="$BUILD_DIR/gpu-check-ctest.log"
if [ "$DRY_RUN" -eq 1 ]; then
  run ctest --test-dir "$BUILD_DIR" -L gpu --output-on-failure
else
  ctest --test-dir "$BUILD_DIR" -L gpu --output-on-failure > "$ctest_log" 2>&1
  status=$?
  tail -30 "$ctest_log"
  summary="$(grep -E 'tests passed|tests failed' "$ctest_log" | tail -1)"
  skipped="$(grep -c 'Skipped' "$ctest_log" || true)"
  step_result "ctest -L gpu: ${summary:-no summary} ($skipped skipped, $((SECONDS - start)) s)" $status
  [ "$skipped" -eq 0 ] || { note "FAIL  gpu tests skipped on a GPU machine"; FAILED=1; }
fi

# ---- 3. The benchmark ----------------------------------------------------------------
bench="$BUILD_DIR/bench/gpu/strata-gpu-bench"
bench_log="$BUILD_DIR/gpu-check-bench.log"
if [ "$DRY_RUN" -eq 1 ]; then
  run "$bench" $BENCH_ARGS
elif [ -x "$bench" ]; then
  start=$SECONDS
  # shellcheck disable=SC2086
  "$bench" $BENCH_ARGS 2>&1 | tee "$bench_log"
  status=${PIPESTATUS[0]}
  while IFS= read -r line; do note "  $line"; done < <(grep '^RESULT ' "$bench_log" | sed 's/^RESULT //')
  step_result "strata-gpu-bench ($((SECONDS - start)) s)" $status
else
  note "FAIL  strata-gpu-bench was not built"
  FAILED=1
fi

write_report
[ "$FAILED" -eq 0 ]
