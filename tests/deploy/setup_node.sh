#!/usr/bin/env bash
# Installs the validator's npm packages (tests/deploy/validate/package.json,
# locked by package-lock.json) into DIR, once per lockfile: DIR is expected
# to be keyed by the lockfile's hash (tests/deploy/CMakeLists.txt does that),
# so a finished install is reused by later builds and test runs.
#
# Usage: setup_node.sh DIR
# Exit 77 (ctest: skipped) when node or npm is not installed.
set -euo pipefail

dir=${1:?usage: setup_node.sh DIR}
source_dir=$(cd "$(dirname "$0")/validate" && pwd)

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "SKIP: $tool is not installed (Debian: apt-get install nodejs npm); deploy validation needs it"
    exit 77
  fi
done

marker=$dir/.installed
if [ -f "$marker" ] && cmp -s "$marker" "$source_dir/package-lock.json"; then
  echo "setup_node: packages already installed in $dir"
  exit 0
fi

mkdir -p "$dir"
cp "$source_dir/package.json" "$source_dir/package-lock.json" "$dir/"
# Another test run may be installing into the same folder: take a lock.
exec 9>"$dir/.lock"
flock 9
if [ -f "$marker" ] && cmp -s "$marker" "$source_dir/package-lock.json"; then
  exit 0
fi
echo "setup_node: installing $(node -e 'console.log(Object.keys(require(process.argv[1]).dependencies).join(", "))' "$dir/package.json") into $dir"
(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
cp "$source_dir/package-lock.json" "$marker"
