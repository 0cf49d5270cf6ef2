#!/usr/bin/env bash
# Installs what building (and, with `test`, testing) Palisade needs on Debian/Ubuntu.
# Idempotent: does nothing when everything is present. Needs root for apt-get.
set -euo pipefail
mode=${1:-build}
need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
for pkg in libclang-dev clang pkg-config; do have_pkg "$pkg" || need+=("$pkg"); done
if [ "$mode" = test ]; then
  for pkg in nftables iproute2 python3 procps; do have_pkg "$pkg" || need+=("$pkg"); done
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${need[*]} (run as root, or install them: apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
