#!/usr/bin/env bash
# Prints, one per line, the installed Debian/Ubuntu packages that own the
# shared libraries the given binaries load (ldd). The image build uses it to
# install exactly those packages in the runtime stage.
#
# Usage: runtime-packages.sh BINARY...
# Fails, naming the library, when a needed library is missing or is owned by
# no package (it would be absent at run time). The GPU driver's libraries are
# the exception: the NVIDIA container toolkit mounts them from the host when
# the container starts, so they are missing at build time by design.
set -euo pipefail

driver_libraries="libcuda.so.1 libnvidia-ml.so.1"

[ $# -ge 1 ] || { echo "usage: runtime-packages.sh BINARY..." >&2; exit 2; }

libraries=$(ldd "$@" | awk -v driver="$driver_libraries" '
  BEGIN { n = split(driver, names, " "); for (i = 1; i <= n; i++) from_host[names[i]] = 1 }
  /=> not found/ { if (!($1 in from_host)) print "MISSING " $1; next }
  /=> \// { print $3 }' | sort -u)
if grep -q '^MISSING ' <<<"$libraries"; then
  echo "runtime-packages: libraries not found: $(grep '^MISSING ' <<<"$libraries" | cut -d' ' -f2 | tr '\n' ' ')" >&2
  exit 1
fi

for library in $libraries; do
  real=$(readlink -f "$library")
  # With merged /usr, dpkg may have recorded either /usr/lib/... or /lib/....
  owner=$({ dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null || true; } | head -n 1)
  if [ -z "$owner" ]; then
    echo "runtime-packages: $library ($real) belongs to no installed package" >&2
    exit 1
  fi
  echo "${owner%%:*}"
done | sort -u
