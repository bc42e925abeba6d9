#!/usr/bin/env bash
# Becomes one pod's container process, inside namespaces its caller made:
#
#   ip netns exec NETNS unshare --mount --uts --propagation private -- \
#     lws_pod_sandbox.sh POD_DIR
#
# POD_DIR comes from lws_pod_specs.mjs. In the new mount and UTS namespaces
# this script: bind-mounts POD_DIR/hosts over /etc/hosts (the kubelet's hosts
# file plus the cluster DNS stand-in), sets the pod's host name, mounts a
# tmpfs for each emptyDir listed in POD_DIR/sandbox (e.g. /dev/shm, /tmp),
# then execs the container's command (POD_DIR/argv) with exactly the
# environment in POD_DIR/env and nothing else, as the securityContext's
# user and groups, with no-new-privs and no capabilities where it asks for
# that. The exec keeps this process's pid, so the caller's pid is the pod's.
set -euo pipefail

dir=${1:?usage: lws_pod_sandbox.sh POD_DIR}
die() {
  echo "lws_pod_sandbox: $*" >&2
  exit 1
}

[ -f "$dir/argv" ] && [ -f "$dir/env" ] && [ -f "$dir/hosts" ] && [ -f "$dir/sandbox" ] ||
  die "$dir lacks argv, env, hosts or sandbox (made by lws_pod_specs.mjs)"

# Read first: a tmpfs below may cover the folder these files are in.
mapfile -d '' -t argv <"$dir/argv"
mapfile -d '' -t env <"$dir/env"
[ "${#argv[@]}" -gt 0 ] || die "$dir/argv is empty"
sandbox_lines=$(cat "$dir/sandbox")

mount --bind "$dir/hosts" /etc/hosts || die "cannot bind-mount $dir/hosts over /etc/hosts"

privileges=()
while read -r key value rest; do
  case "$key" in
    hostname) hostname "$value" || die "cannot set the host name $value" ;;
    user) privileges+=(--reuid "$value") ;;
    group) privileges+=(--regid "$value") ;;
    groups) privileges+=(--groups "$value") ;;
    no-new-privs) privileges+=(--no-new-privs) ;;
    drop-capabilities) privileges+=(--inh-caps=-all --bounding-set=-all) ;;
    tmpfs)
      # An emptyDir: fresh, world-writable like the kubelet makes it, sized by its limit.
      options=mode=1777
      if [ -n "$rest" ] && [ "$rest" != 0 ]; then options+=",size=$rest"; fi
      mount -t tmpfs -o "$options" "$key-${dir##*/}" "$value" || die "cannot mount a tmpfs at $value"
      ;;
    "") ;;
    *) die "unknown sandbox line '$key' in $dir/sandbox" ;;
  esac
done <<<"$sandbox_lines"
# Without a runAsGroup or fsGroup, drop root's supplementary groups as a runtime would.
if [[ " ${privileges[*]} " == *" --reuid "* && " ${privileges[*]} " != *" --groups "* ]]; then
  privileges+=(--clear-groups)
fi

# The container's working directory is the image's (/home/strata), which
# does not exist here; / is the neutral stand-in.
cd /
if [ "${#privileges[@]}" -eq 0 ]; then exec env -i "${env[@]}" "${argv[@]}"; fi
exec setpriv "${privileges[@]}" -- env -i "${env[@]}" "${argv[@]}"
