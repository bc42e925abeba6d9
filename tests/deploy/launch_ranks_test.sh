#!/usr/bin/env bash
# Tests deploy/docker/strata-launch-ranks, the container entry point that
# runs a pod's ranks, with a fake worker (a shell script) in place of
# strata-worker: the flags each rank gets, signal forwarding, and the pod
# failing as a whole when one rank dies.
set -uo pipefail

launcher=$(cd "$(dirname "$0")/../../deploy/docker" && pwd)/strata-launch-ranks
scratch=$(mktemp -d)
launcher_pid=""
cleanup() {
  [ -n "$launcher_pid" ] && kill -KILL "$launcher_pid" 2>/dev/null
  local f
  for f in "$scratch"/pid.*; do [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null; done
  rm -rf "$scratch"
}
trap cleanup EXIT

# The fake worker records its pid, arguments and environment, then waits for
# SIGTERM (exit 0; ignored if ignore.RANK exists) or for a file that tells it
# to exit with a status.
cat >"$scratch/fake-worker" <<'WORKER'
#!/usr/bin/env bash
dir=$(dirname "$0")
rank=$STRATA_LOCAL_RANK
echo $$ >"$dir/pid.$rank"
echo "$*" >"$dir/args.$rank"
if [ -f "$dir/ignore.$rank" ]; then
  trap 'echo term >"$dir/term.$rank"' TERM
else
  trap 'echo term >"$dir/term.$rank"; exit 0' TERM
fi
while true; do
  if [ -f "$dir/exit.$rank" ]; then exit "$(cat "$dir/exit.$rank")"; fi
  sleep 0.05
done
WORKER
chmod +x "$scratch/fake-worker"

failures=0
checks=0
status=""
check() {
  local description=$1; shift
  checks=$((checks + 1))
  if "$@"; then echo "ok   $description"; else echo "FAIL $description"; failures=$((failures + 1)); fi
}
wait_for() {  # wait_for SECONDS FILE...
  local deadline=$((SECONDS + $1)); shift
  local f
  for f in "$@"; do
    while [ ! -e "$f" ]; do
      [ "$SECONDS" -ge "$deadline" ] && return 1
      sleep 0.05
    done
  done
}
start() {
  rm -f "$scratch"/args.* "$scratch"/term.* "$scratch"/exit.* "$scratch"/pid.*
  "$launcher" "$@" &
  launcher_pid=$!
}
finish() {  # finish SECONDS: waits for the launcher; sets status ("timeout" if it hangs)
  local deadline=$((SECONDS + $1))
  while kill -0 "$launcher_pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then kill -KILL "$launcher_pid"; status=timeout; return; fi
    sleep 0.05
  done
  wait "$launcher_pid"; status=$?
  launcher_pid=""
}

# 1. Each rank gets its local rank and its own ports.
start --ranks 3 --grpc-port 50051 --metrics-port 9400 -- "$scratch/fake-worker" --model=/m --tp=3
check "three ranks start" wait_for 10 "$scratch/args.0" "$scratch/args.1" "$scratch/args.2"
check "rank 0 flags" grep -qx -- "--model=/m --tp=3 --local-rank=0 --listen=0.0.0.0:50051 --metrics-listen=0.0.0.0:9400" "$scratch/args.0"
check "rank 2 flags" grep -qx -- "--model=/m --tp=3 --local-rank=2 --listen=0.0.0.0:50053 --metrics-listen=0.0.0.0:9402" "$scratch/args.2"

# 2. SIGTERM reaches every rank; the launcher exits 0 once all have stopped.
kill -TERM "$launcher_pid"
finish 10
check "SIGTERM stops the pod cleanly" [ "$status" = 0 ]
check "every rank got SIGTERM" wait_for 2 "$scratch/term.0" "$scratch/term.1" "$scratch/term.2"

# 3. A rank that dies takes the pod down with its status; the others are stopped.
start --ranks 3 --grpc-port 50051 --metrics-port 9400 --kill-after 5 -- "$scratch/fake-worker"
wait_for 10 "$scratch/args.0" "$scratch/args.1" "$scratch/args.2"
echo 3 >"$scratch/exit.1"
finish 10
check "a dead rank fails the pod with its status" [ "$status" = 3 ]
check "the other ranks were stopped" wait_for 2 "$scratch/term.0" "$scratch/term.2"

# 4. A rank that exits 0 on its own is still a failure of the pod.
start --ranks 2 --grpc-port 50051 --metrics-port 9400 -- "$scratch/fake-worker"
wait_for 10 "$scratch/args.0" "$scratch/args.1"
echo 0 >"$scratch/exit.0"
finish 10
check "a rank ending early fails the pod" [ "$status" = 1 ]

# 5. One rank: the worker replaces the launcher (same pid, signals go straight to it).
start --ranks 1 --grpc-port 50051 --metrics-port 9400 -- "$scratch/fake-worker"
wait_for 10 "$scratch/args.0"
check "one rank runs in the launcher's process" [ "$(cat "$scratch/pid.0")" = "$launcher_pid" ]
kill -TERM "$launcher_pid"
finish 10
check "one rank stops on SIGTERM" [ "$status" = 0 ]

# 6. A rank that ignores SIGTERM is killed after --kill-after once another rank died.
touch "$scratch/ignore.0"
start --ranks 2 --grpc-port 50051 --metrics-port 9400 --kill-after 1 -- "$scratch/fake-worker"
wait_for 10 "$scratch/args.0" "$scratch/args.1" "$scratch/pid.0"
hung=$(cat "$scratch/pid.0")
echo 5 >"$scratch/exit.1"
finish 10
check "a rank deaf to SIGTERM is killed, the pod fails" [ "$status" = 5 ]
check "the deaf rank is gone" bash -c "! kill -0 $hung 2>/dev/null"
rm -f "$scratch/ignore.0"

# 7. Refusals, with a message naming the problem.
refuses() {  # refuses TEXT ARGS...
  local text=$1; shift
  local output
  if output=$("$launcher" "$@" 2>&1); then return 1; fi
  grep -qF -- "$text" <<<"$output"
}
check "refuses --listen among the worker's flags" refuses "'--listen=0.0.0.0:1' is set by strata-launch-ranks" \
  --ranks 2 --grpc-port 50051 --metrics-port 9400 -- "$scratch/fake-worker" --listen=0.0.0.0:1
check "refuses a rank count of 0" refuses "--ranks must be a positive integer" \
  --ranks 0 --grpc-port 50051 --metrics-port 9400 -- "$scratch/fake-worker"
check "refuses overlapping ports" refuses "overlap" \
  --ranks 4 --grpc-port 9400 --metrics-port 9402 -- "$scratch/fake-worker"
check "refuses a missing command" refuses "no command after '--'" \
  --ranks 1 --grpc-port 50051 --metrics-port 9400 --

echo "$((checks - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
