#!/usr/bin/env bash
# Starts a local Strata deployment on 127.0.0.1 — one worker serving the model
# and a router in front of it — streams one sample story through the router,
# prints how to call it, and serves until Ctrl-C, which stops everything.
#
# Usage: scripts/run-local.sh [--build-dir DIR] [--model DIR] [--port PORT]
set -euo pipefail

build_dir=build
model=models/stories260k
port=50051
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build_dir=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    *) echo "run-local: unknown argument '$1' (--build-dir, --model, --port)" >&2; exit 2 ;;
  esac
done

worker_bin=$build_dir/worker/service/strata-worker
router_bin=$build_dir/router/strata-router
cli_bin=$build_dir/cli/strata
for bin in "$worker_bin" "$router_bin" "$cli_bin"; do
  [ -x "$bin" ] || { echo "run-local: $bin is missing; run 'make run' or build it first" >&2; exit 1; }
done
[ -f "$model/config.json" ] || { echo "run-local: $model/config.json not found (--model)" >&2; exit 1; }

# The router takes the requested port when it is free, any free port otherwise.
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "run-local: port $port is taken; the router will pick a free one"
  port=0
fi

state_dir=$(mktemp -d -t strata-local.XXXXXX)
pids=()
stop_all() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$state_dir"
}
trap 'echo; echo "run-local: stopping"; stop_all; exit 0' INT TERM
trap stop_all EXIT

# wait_ready FILE PID NAME: waits until FILE exists (the process is SERVING).
wait_ready() {
  local file=$1 pid=$2 name=$3
  for _ in $(seq 1 600); do
    [ -s "$file" ] && return 0
    kill -0 "$pid" 2>/dev/null || { echo "run-local: $name exited; see $state_dir/$name.log" >&2; cat "$state_dir/$name.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "run-local: $name not ready after 60 s; see $state_dir/$name.log" >&2
  exit 1
}
json_field() { sed -n "s/.*\"$2\": *\"\([^\"]*\)\".*/\1/p" "$1"; }

"$worker_bin" --model "$model" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --ready-file "$state_dir/worker.json" >"$state_dir/worker.log" 2>&1 &
pids+=($!)
wait_ready "$state_dir/worker.json" "${pids[0]}" worker
worker_address=$(json_field "$state_dir/worker.json" listen)
worker_metrics=$(json_field "$state_dir/worker.json" metrics)

"$router_bin" --backend "$worker_address" --listen "127.0.0.1:$port" --metrics-listen 127.0.0.1:0 \
  --ready-file "$state_dir/router.json" >"$state_dir/router.log" 2>&1 &
pids+=($!)
wait_ready "$state_dir/router.json" "${pids[1]}" router
router_address=$(json_field "$state_dir/router.json" listen)
router_metrics=$(json_field "$state_dir/router.json" metrics)

echo "Strata is serving $model"
echo "  router  $router_address  (metrics http://$router_metrics/metrics)"
echo "  worker  $worker_address  (metrics http://$worker_metrics/metrics)"
echo
echo "A sample story, streamed through the router:"
echo
prompt="Once upon a time"
printf '%s' "$prompt"
"$cli_bin" generate --server "$router_address" --max-tokens 200 --temperature 0.8 --seed 7 \
  "$prompt"
echo
echo
echo "Call it yourself:"
echo "  $cli_bin generate --server $router_address \"Lily saw a big dog\""
echo "  $cli_bin generate --server $router_address --json --temperature 0 --max-tokens 20 \"Tim\""
echo "  $cli_bin tokenize --server $router_address \"Once upon a time\""
echo "  $cli_bin info --server $router_address"
echo "Logs: $state_dir/{router,worker}.log. Ctrl-C stops everything."
wait "${pids[@]}"
