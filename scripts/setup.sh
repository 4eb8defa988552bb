#!/usr/bin/env bash
# Installs what svsettle's demo and tests need on Debian (bookworm), as root:
# the Rust toolchain is expected (cargo); supervisors, package managers and tools
# come from Debian; s6-rc and apk-tools are built from source by
# ../shared/tools/build-test-tools.sh (Debian packages neither).
#
#   scripts/setup.sh          everything (tests)
#   scripts/setup.sh --demo   only what the demo needs (s6, execline)
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)

demo_pkgs=(s6 execline pacman-package-manager libarchive-tools)
test_pkgs=(s6 execline runit sqlite3 rsync pacman-package-manager libalpm-dev libarchive-tools
  busybox-static util-linux procps pkg-config clang libclang-dev time)

want=("${test_pkgs[@]}")
[ "${1:-}" != --demo ] || want=("${demo_pkgs[@]}")

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get -q -o DPkg::Lock::Timeout=300 update >&2
  apt-get -q -y -o DPkg::Lock::Timeout=300 install --no-install-recommends "${missing[@]}" >&2
fi

command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found: install a Rust toolchain (rustup) first" >&2; exit 1; }

if [ "${1:-}" != --demo ]; then
  tools="$here/../shared/tools/build-test-tools.sh"
  [ -x "$tools" ] || [ -f "$tools" ] || { echo "setup: $tools not found (s6-rc and apk-tools are built by it)" >&2; exit 1; }
  bash "$tools" >&2
fi
