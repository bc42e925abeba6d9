#!/usr/bin/env bash
# One replica of a kustomize overlay (or of the Helm chart with an example
# values file), run as local processes started with exactly what the
# rendered LeaderWorkerSet gives each pod, must form a
# working replica: its leader turns SERVING on the readiness probe's service,
# reports the manifest's tp x pp, and generates the reference implementation's
# greedy tokens for the bundled model; on SIGTERM every pod stops cleanly.
#
#   1. kubectl kustomize renders deploy/k8s/overlays/OVERLAY (default cpu-dev),
#      or helmrender renders helm/strata with examples/VALUES.yaml.
#   2. lws_pod_specs.mjs takes group 0 of its LeaderWorkerSet and computes each
#      pod's command, args and env as the LeaderWorkerSet controller and the
#      kubelet would (LWS_LEADER_ADDRESS/GROUP_SIZE/WORKER_INDEX, envFrom,
#      $(VAR) expansion, downward API); the few places where a local run must
#      differ from a cluster are printed from its deviations.txt.
#   3. Each pod gets a network namespace of its own with an "eth0" on a
#      bridge (so the fixed ports the manifests use, 0.0.0.0:50051,
#      0.0.0.0:9400 and the leader's 29500, never collide, and
#      GLOO_SOCKET_IFNAME=eth0 names a real interface), its own mount and UTS
#      namespaces (its hosts file, host name and emptyDir tmpfs mounts), and
#      the securityContext's user; lws_pod_sandbox.sh then execs the
#      container's entry point, strata-launch-ranks, with the build's
#      strata-worker on PATH. The bridge lives in a "node" namespace, from
#      which this script probes and calls the leader like the kubelet and the
#      router would.
#   4. Teardown SIGTERMs every pod (what the kubelet does when the group is
#      deleted; preStop hooks are not run), expects each to exit 0 within its
#      grace period (capped), and leaves no process or namespace behind, on
#      failure too (the EXIT trap kills whatever still runs in the pods'
#      namespaces; a watchdog does it if this script is killed outright, and
#      namespaces of such a run that survived are swept at the next start).
#
# Usage: lws_replica_test.sh WORKER_BINARY CLI_BINARY
#          [--overlay NAME | --helm-values NAME | --manifest FILE] [--hold]
#   --overlay NAME      deploy/k8s/overlays/NAME (default: cpu-dev)
#   --helm-values NAME  helm/strata rendered with helm/strata/examples/NAME.yaml
#                       (release "strata", namespace "strata-dev") by $STRATA_HELMRENDER
#   --manifest FILE     an already rendered manifest
#   --hold   once the checks pass, keep the replica up until Ctrl-C and print
#            how to call it (ip netns exec <node namespace> strata ...)
# Environment (set by CMake): STRATA_DEPLOY_NODE_DIR (the yaml package),
# STRATA_DEPLOY_WORK_DIR (rendered output, logs of a failed run),
# STRATA_HELMRENDER (with --helm-values).
# Exit 77 = skipped: not root, or a tool or network namespaces are missing.
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/tests/deploy
usage() {
  echo "usage: $0 WORKER_BINARY CLI_BINARY [--overlay NAME | --helm-values NAME | --manifest FILE] [--hold]" >&2
  exit 2
}
[ $# -ge 2 ] || usage
worker=$1
cli=$2
shift 2
source_kind=overlay
source_name=cpu-dev
hold=0
while [ $# -gt 0 ]; do
  case "$1" in
    --overlay) [ $# -ge 2 ] || usage; source_kind=overlay; source_name=$2; shift 2 ;;
    --helm-values) [ $# -ge 2 ] || usage; source_kind=helm; source_name=$2; shift 2 ;;
    --manifest) [ $# -ge 2 ] || usage; source_kind=manifest; source_name=$(realpath "$2"); shift 2 ;;
    --hold) hold=1; shift ;;
    *) usage ;;
  esac
done

# Seconds to wait for the leader to turn ready, and at most for a pod to stop
# (each pod gets its own terminationGracePeriodSeconds, as from the kubelet,
# up to this cap).
startup_timeout=180
stop_timeout_cap=90
# The pods' network, private to this run's namespaces.
subnet=10.244.0
node_ip=$subnet.1
first_pod_ip=$subnet.10

skip() {
  echo "SKIP: $*"
  exit 77
}
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

[ "$(id -u)" -eq 0 ] || skip "needs root: every pod runs in network, mount and UTS namespaces of its own"
for tool in ip unshare setpriv mount kubectl node; do
  command -v "$tool" >/dev/null 2>&1 || skip "$tool is not installed"
done
[ -d "${STRATA_DEPLOY_NODE_DIR:?}/node_modules/yaml" ] ||
  skip "the yaml package is not installed in $STRATA_DEPLOY_NODE_DIR (see the deploy_node_setup test)"
[ -x "$worker" ] || fail "no worker binary at $worker"
[ -x "$cli" ] || fail "no strata binary at $cli"
case "$source_kind" in
  overlay)
    source_text=deploy/k8s/overlays/$source_name
    [ -f "$root/$source_text/kustomization.yaml" ] || fail "no overlay $source_text"
    ;;
  helm)
    source_text="helm/strata with examples/$source_name.yaml"
    [ -f "$root/helm/strata/examples/$source_name.yaml" ] || fail "no helm/strata/examples/$source_name.yaml"
    [ -x "${STRATA_HELMRENDER:-}" ] || skip "helmrender was not built (see the deploy_helmrender_build test)"
    ;;
  manifest)
    source_text=$source_name
    [ -f "$source_name" ] || fail "no manifest $source_name"
    ;;
esac

prefix=strata-lws-$$
namespaces=()  # created by this run, removed by cleanup
pod_pids=()    # index -> pid of the pod's process (its container entry point)
pod_names=()
pod_ips=()
pod_graces=()
work=""
watchdog=""
passed=0

# Kills everything that runs in namespace $1, then removes the namespace.
remove_namespace() {
  local ns=$1 pids _
  for _ in $(seq 50); do
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [ -z "$pids" ] && break
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null
    sleep 0.1
  done
  ip netns del "$ns" 2>/dev/null
}

# Namespaces of earlier runs whose script is gone (killed outright).
sweep_stale_namespaces() {
  local ns owner
  while read -r ns _; do
    [[ "$ns" =~ ^strata-lws-([0-9]+)-(node|probe|pod[0-9]+)$ ]] || continue
    owner=${BASH_REMATCH[1]}
    [ "$owner" != "$$" ] && kill -0 "$owner" 2>/dev/null && continue
    echo "removing namespace $ns left by an earlier run (pid $owner)"
    remove_namespace "$ns"
  done < <(ip netns list 2>/dev/null)
}

print_logs() {
  local name
  for name in "${pod_names[@]}"; do
    [ -f "$work/logs/$name.log" ] || continue
    echo "--- last lines of $name ($work/logs/$name.log)"
    tail -n 15 "$work/logs/$name.log"
  done
}

cleanup() {
  local status=$? ns pid
  trap - EXIT INT TERM HUP
  if [ -n "$watchdog" ]; then
    kill -TERM "$watchdog" 2>/dev/null
    wait "$watchdog" 2>/dev/null
  fi
  for ((ns_index = ${#namespaces[@]} - 1; ns_index >= 0; ns_index--)); do
    remove_namespace "${namespaces[$ns_index]}"
  done
  for pid in "${pod_pids[@]}"; do wait "$pid" 2>/dev/null; done
  if [ "$passed" -eq 1 ] && [ "$status" -eq 0 ]; then
    [ -n "$work" ] && rm -rf "$work"
  elif [ -n "$work" ]; then
    print_logs
    echo "rendered manifest, pod specs and logs kept in $work"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# Where each thread of process $1 is, from the kernel's view (for a pod that
# does not stop): its state, wait channel and kernel stack.
describe_tasks() {
  local task
  echo "--- threads of pid $1: $(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null)"
  for task in /proc/"$1"/task/*; do
    [ -d "$task" ] || continue
    echo "  ${task##*/} $(cat "$task/comm" 2>/dev/null): $(grep '^State' "$task/status" 2>/dev/null)" \
      "wchan=$(cat "$task/wchan" 2>/dev/null)"
    sed 's/^/      /' "$task/stack" 2>/dev/null | head -n 8
  done
}

# The pod's process has exited (a zombie counts): true.
pod_exited() {
  local pid=$1
  [ ! -e "/proc/$pid" ] || grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

in_node() { ip netns exec "$prefix-node" "$@"; }

sweep_stale_namespaces
ip netns add "$prefix-probe" 2>/dev/null || skip "cannot create network namespaces here (ip netns add)"
ip netns del "$prefix-probe"

mkdir -p "${STRATA_DEPLOY_WORK_DIR:?}"
work=$(mktemp -d "$STRATA_DEPLOY_WORK_DIR/lws-replica.XXXXXX")
# The pods run as the securityContext's user: it must reach the binaries.
chmod 755 "$work"
mkdir -p "$work/bin" "$work/logs"
# The image's /usr/local/bin: the three binaries and the launcher.
ln -s "$(realpath "$worker")" "$work/bin/strata-worker"
ln -s "$(realpath "$cli")" "$work/bin/strata"
ln -s "$root/deploy/docker/strata-launch-ranks" "$work/bin/strata-launch-ranks"

# 1. Render.
case "$source_kind" in
  overlay)
    kubectl kustomize "$root/$source_text" >"$work/rendered.yaml" || fail "kubectl kustomize $source_text"
    ;;
  helm)
    "$STRATA_HELMRENDER" --chart "$root/helm/strata" --release strata --namespace strata-dev \
      -f "$root/helm/strata/examples/$source_name.yaml" >"$work/rendered.yaml" ||
      fail "helmrender $source_text"
    ;;
  manifest) cp "$source_name" "$work/rendered.yaml" ;;
esac
echo "rendered $source_text"

# 2. The pods of group 0. The model volume's node folder is the repository's
# models/ (what docs/deploy.md has kind mount at /var/lib/strata/models).
node "$here/lws_pod_specs.mjs" --node-dir "$STRATA_DEPLOY_NODE_DIR" \
  --manifest "$work/rendered.yaml" --out "$work/pods" --group 0 --first-pod-ip "$first_pod_ip" \
  --host-path /var/lib/strata/models="$root/models" --pvc strata-models="$root/models" \
  --local-bin "$work/bin" --host-ip "$node_ip" --keep-visible "$work" --keep-visible "$root" \
  --keep-visible "$(realpath "$worker")" --keep-visible "$(realpath "$cli")" || fail "lws_pod_specs.mjs could not emulate the pods"
chmod -R a+rX "$work/pods"
while IFS=$'\t' read -r index name ip _role grace; do
  pod_names[index]=$name
  pod_ips[index]=$ip
  pod_graces[index]=$grace
done <"$work/pods/pods.tsv"
pods=${#pod_names[@]}
echo "group 0: $pods pods: ${pod_names[*]}"
echo "differences from a cluster (everything else is as rendered):"
sed 's/^/  /' "$work/pods/deviations.txt"
read -r ready_port ready_service <"$work/pods/pod0/ready" ||
  fail "the leader template has no gRPC readiness probe"

# Should this script be killed outright (no EXIT trap), the watchdog removes
# its namespaces and whatever runs in them.
(
  trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
  trap '' INT HUP
  while kill -0 "$$" 2>/dev/null; do
    sleep 1 &
    sleeper=$!
    wait "$sleeper"
  done
  while read -r ns _; do
    [[ "$ns" == "$prefix"-* ]] && remove_namespace "$ns"
  done < <(ip netns list 2>/dev/null)
) &
watchdog=$!

# 3. Network: a "node" namespace with a bridge, one namespace per pod with
# eth0 on that bridge.
namespaces+=("$prefix-node")
ip netns add "$prefix-node" || fail "ip netns add $prefix-node"
ip -n "$prefix-node" link set lo up &&
  ip -n "$prefix-node" link add br0 type bridge &&
  ip -n "$prefix-node" addr add "$node_ip/24" dev br0 &&
  ip -n "$prefix-node" link set br0 up || fail "cannot set up the node namespace's bridge"
for ((i = 0; i < pods; i++)); do
  ns=$prefix-pod$i
  namespaces+=("$ns")
  ip netns add "$ns" || fail "ip netns add $ns"
  ip -n "$prefix-node" link add "veth$i" type veth peer name eth0 netns "$ns" &&
    ip -n "$prefix-node" link set "veth$i" master br0 &&
    ip -n "$prefix-node" link set "veth$i" up &&
    ip -n "$ns" link set lo up &&
    ip -n "$ns" addr add "${pod_ips[i]}/24" dev eth0 &&
    ip -n "$ns" link set eth0 up &&
    ip -n "$ns" route add default via "$node_ip" || fail "cannot give $ns its eth0"
done

# Start the pods, leader first (startupPolicy LeaderCreated creates the
# followers right after it, without waiting for it to be ready).
for ((i = 0; i < pods; i++)); do
  ip netns exec "$prefix-pod$i" unshare --mount --uts --propagation private -- \
    bash "$here/lws_pod_sandbox.sh" "$work/pods/pod$i" >"$work/logs/${pod_names[i]}.log" 2>&1 &
  pod_pids[i]=$!
done
echo "started pods: $(for ((i = 0; i < pods; i++)); do printf '%s=%s(pid %s) ' \
  "${pod_names[i]}" "${pod_ips[i]}" "${pod_pids[i]}"; done)"

# The leader's readiness probe: gRPC health of $ready_service on $ready_port.
leader=${pod_ips[0]}:$ready_port
started=$SECONDS
while true; do
  for ((i = 0; i < pods; i++)); do
    if pod_exited "${pod_pids[i]}"; then
      wait "${pod_pids[i]}"
      fail "pod ${pod_names[i]} exited with status $? before the replica was ready"
    fi
  done
  if in_node "$cli" health --server "$leader" --service "$ready_service" --timeout 2 >/dev/null 2>&1; then
    break
  fi
  [ $((SECONDS - started)) -lt "$startup_timeout" ] ||
    fail "the leader $leader was not SERVING $ready_service within $startup_timeout s"
  sleep 0.25
done
echo "leader $leader is SERVING $ready_service after $((SECONDS - started)) s"

# Every pod serves health once it has joined; followers have no probe in the
# manifest, but a follower that never joined would not be SERVING.
for ((i = 1; i < pods; i++)); do
  in_node "$cli" health --server "${pod_ips[i]}:$ready_port" --timeout 2 >/dev/null ||
    fail "follower ${pod_names[i]} is not SERVING health on ${pod_ips[i]}:$ready_port"
done

# The replica has the shape the manifest asks for: the leader's --tp and --pp.
flag_value() {  # flag_value POD_INDEX FLAG: the value of --FLAG=V or --FLAG V in the pod's argv
  tr '\0' '\n' <"$work/pods/pod$1/argv" | sed -n "/^$2\$/{n;p;q}; s/^$2=//p" | head -n 1
}
want_tp=$(flag_value 0 --tp)
want_pp=$(flag_value 0 --pp)
[ -n "$want_tp" ] && [ -n "$want_pp" ] || fail "the leader's arguments have no --tp/--pp"
in_node "$cli" info --server "$leader" --json >"$work/info.json" || fail "strata info --server $leader"
node -e '
  const info = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const [tp, pp] = [Number(process.argv[2]), Number(process.argv[3])];
  if (info.tensor_parallel_size !== tp || info.pipeline_parallel_size !== pp) {
    console.error(`the leader reports tp ${info.tensor_parallel_size} x pp ${info.pipeline_parallel_size}; its arguments say --tp=${tp} --pp=${pp}`);
    process.exit(1);
  }
  console.log(`the leader reports ${info.model_name}, tp ${tp} x pp ${pp}`);
' "$work/info.json" "$want_tp" "$want_pp" || fail "wrong replica shape"

# Greedy generations match the reference implementation: one prompt as text
# (the leader tokenizes it), one as token ids.
reference=$root/models/stories260k/reference.json
check_generation() {  # check_generation CASE_INDEX text|ids
  local case_index=$1 mode=$2 prompt prompt_ids max_tokens out=$work/generate-$1.jsonl
  read -r prompt_ids max_tokens < <(node -e '
    const c = require(process.argv[1]).prompts[Number(process.argv[2])];
    console.log(c.prompt_ids.join(","), c.generated_ids.length);' "$reference" "$case_index")
  prompt=$(node -e 'console.log(require(process.argv[1]).prompts[Number(process.argv[2])].prompt)' \
    "$reference" "$case_index")
  local request=(generate --server "$leader" --json --temperature 0 --max-tokens "$max_tokens" --timeout 120)
  if [ "$mode" = text ]; then
    in_node "$cli" "${request[@]}" "$prompt" >"$out" || fail "strata generate \"$prompt\" failed"
  else
    in_node "$cli" "${request[@]}" --prompt-ids "$prompt_ids" >"$out" ||
      fail "strata generate --prompt-ids $prompt_ids failed"
  fi
  node -e '
    const fs = require("fs");
    const c = require(process.argv[1]).prompts[Number(process.argv[2])];
    const lines = fs.readFileSync(process.argv[3], "utf8").split("\n").filter((l) => l !== "");
    const responses = lines.map((l) => JSON.parse(l));
    const ids = responses.flatMap((r) => r.token_ids);
    const text = responses.map((r) => r.text).join("");
    const want = c.generated_ids;
    const first = want.findIndex((id, i) => ids[i] !== id);
    if (ids.length !== want.length || first >= 0) {
      console.error(`prompt ${JSON.stringify(c.prompt)}: got ${ids.length} ids, want ${want.length}; ` +
        `first difference at ${first}: got ${ids[first]}, want ${want[first]}`);
      process.exit(1);
    }
    if (process.argv[4] === "text" && text !== c.completion_text) {
      console.error(`prompt ${JSON.stringify(c.prompt)}: text differs from the reference:\n` +
        `got:  ${JSON.stringify(text)}\nwant: ${JSON.stringify(c.completion_text)}`);
      process.exit(1);
    }
    console.log(`prompt ${JSON.stringify(c.prompt)} (${process.argv[4]}): ${ids.length} greedy ids match the reference`);
  ' "$reference" "$case_index" "$out" "$mode" || fail "generation differs from models/stories260k/reference.json"
}
check_generation 1 text
check_generation 2 ids

if [ "$hold" -eq 1 ]; then
  echo
  echo "The replica is up. Call it from the node namespace, e.g.:"
  echo "  ip netns exec $prefix-node $cli generate --server $leader \"Lily saw a big dog\""
  echo "  ip netns exec $prefix-node $cli info --server $leader"
  echo "Logs: $work/logs. Ctrl-C stops it."
  holding=1
  trap 'holding=0' INT TERM HUP
  while [ "$holding" -eq 1 ]; do
    for ((i = 0; i < pods; i++)); do
      pod_exited "${pod_pids[i]}" && { echo "pod ${pod_names[i]} exited"; holding=0; }
    done
    sleep 0.5
  done
  trap 'exit 130' INT TERM HUP
fi

# 4. Stop the group as the kubelet does (SIGTERM to every pod at once).
for ((i = 0; i < pods; i++)); do kill -TERM "${pod_pids[i]}" 2>/dev/null; done
sigterm_at=$SECONDS
# Each pod is waited for with the shell's own `wait` (its exit status, no
# reading of /proc), interrupted by a timer's SIGUSR1 at the pod's limit.
stop_timed_out=0
trap 'stop_timed_out=1' USR1
for ((i = 0; i < pods; i++)); do
  limit=${pod_graces[i]}
  [ "$limit" -gt "$stop_timeout_cap" ] && limit=$stop_timeout_cap
  # The limit runs from the SIGTERM, as the kubelet's grace period does.
  left=$((sigterm_at + limit - SECONDS))
  [ "$left" -gt 0 ] || left=0
  (
    trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
    sleep "$left" &
    sleeper=$!
    wait "$sleeper" && kill -USR1 $$
  ) >/dev/null 2>&1 &
  timer=$!
  stop_timed_out=0
  wait "${pod_pids[i]}"
  status=$?
  [ $((SECONDS - sigterm_at)) -le 5 ] ||
    echo "note: pod ${pod_names[i]} stopped $((SECONDS - sigterm_at)) s after SIGTERM (limit $limit s)"
  kill "$timer" 2>/dev/null
  wait "$timer" 2>/dev/null
  if [ "$stop_timed_out" -ne 0 ]; then
    describe_tasks "${pod_pids[i]}"
    fail "pod ${pod_names[i]} still runs $limit s after SIGTERM"
  fi
  [ "$status" -eq 0 ] || fail "pod ${pod_names[i]} exited with status $status on SIGTERM (want 0)"
done
trap - USR1
for ((i = 0; i < pods; i++)); do
  left=$(ip netns pids "$prefix-pod$i")
  [ -z "$left" ] || fail "processes left in ${pod_names[i]}'s namespace after it stopped: $left"
done
echo "every pod exited 0 on SIGTERM; nothing left running"
passed=1
echo "PASS: one replica of $source_text, run from the rendered LeaderWorkerSet, serves the reference outputs"
