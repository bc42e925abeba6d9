#!/usr/bin/env bash
# Tests deploy/docker/runtime-packages.sh, which picks the runtime image's
# packages from the binaries' shared libraries: on a system binary it must
# name the C library's package, and it must fail on a missing library.
set -euo pipefail

script=$(cd "$(dirname "$0")/../../deploy/docker" && pwd)/runtime-packages.sh
command -v dpkg >/dev/null 2>&1 || { echo "SKIP: dpkg is not installed (not a Debian system)"; exit 77; }
command -v ldd >/dev/null 2>&1 || { echo "SKIP: ldd is not installed"; exit 77; }

binary=$(command -v ls)
packages=$("$script" "$binary")
echo "packages for $binary: $(tr '\n' ' ' <<<"$packages")"
grep -qx 'libc6' <<<"$packages" || { echo "FAIL: libc6 is not among them" >&2; exit 1; }

# A fake ldd reports a library nobody has, and the GPU driver's libcuda,
# which the host provides at run time and so must not count as missing.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cat >"$scratch/ldd" <<'FAKE'
#!/bin/sh
echo "	libstrata-missing.so.1 => not found"
echo "	libcuda.so.1 => not found"
FAKE
chmod +x "$scratch/ldd"
if output=$(PATH="$scratch:$PATH" "$script" "$binary" 2>&1); then
  echo "FAIL: a missing library was not reported" >&2
  exit 1
fi
grep -q "libraries not found: libstrata-missing.so.1" <<<"$output" ||
  { echo "FAIL: unexpected message: $output" >&2; exit 1; }
if grep -q "libcuda" <<<"$output"; then
  echo "FAIL: libcuda.so.1 comes from the host driver and must not be reported" >&2
  exit 1
fi
echo "runtime-packages.sh: ok"
