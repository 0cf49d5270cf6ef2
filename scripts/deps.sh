#!/usr/bin/env bash
# Installs what building (and, with `test`, testing) Palisade needs on Debian/Ubuntu.
# Idempotent: does nothing when everything is present. Needs root for apt-get.
set -euo pipefail
mode=${1:-build}
need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
for pkg in libclang-dev clang pkg-config; do have_pkg "$pkg" || need+=("$pkg"); done
if [ "$mode" = test ]; then
  # The bouncer tests run CrowdSec's own bouncers from Debian's packages; installed
  # without recommends, which would pull in the crowdsec engine and its online
  # registration. Prometheus scrapes the node in the metrics test.
  for pkg in nftables iproute2 python3 python3-pip procps openssl curl crowdsec-firewall-bouncer crowdsec-custom-bouncer prometheus; do
    have_pkg "$pkg" || need+=("$pkg")
  done
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
if [ "$mode" = test ] && ! python3 -c "import pycrowdsec" 2>/dev/null; then
  echo "installing: pycrowdsec (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check pycrowdsec 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages pycrowdsec
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
