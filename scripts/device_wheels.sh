#!/usr/bin/env bash
# Download the wheels scripts/device_checks.sh installs on a lent GPU machine (no package
# registry can be reached from there): deploy/device-wheels.txt as CPython 3.12 manylinux
# x86-64 wheels into .whl/ (git-ignored through .git/info/exclude), about 30 MB.
#   bash scripts/device_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
PIP="${PIP:-python3 -m pip}"
# pip matches manylinux_2_N exactly: offer every glibc the device image's (2.39) can run
PLATFORMS="--platform manylinux2014_x86_64 --platform manylinux1_x86_64"
for n in $(seq 17 39); do PLATFORMS="$PLATFORMS --platform manylinux_2_${n}_x86_64"; done
grep -v '^\s*#' deploy/device-wheels.txt | grep -v '^\s*$' | while read -r requirement; do
  $PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    $PLATFORMS -d .whl "$requirement" 2>&1 | grep -v "^WARNING: Location" || true
done
count=$(grep -cv '^\s*\(#\|$\)' deploy/device-wheels.txt)
found=$(ls .whl/*.whl | wc -l)
du -sh .whl && ls .whl
[ "$found" -ge "$count" ] || { echo "only $found of $count wheels downloaded" >&2; exit 1; }
