#!/usr/bin/env bash
# Install kvx's build dependencies on Debian 12 with apt. Idempotent: when everything is
# already installed it prints nothing and exits 0. Run as root (or with sudo available).
# With KVX_DEPS=kvx only what the kvx binary needs (scripts/quickstart.sh); otherwise the test
# suite's too.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config git ccache
  libtorch-dev libcli11-dev libyaml-cpp-dev libfmt-dev libhdf5-dev libsqlite3-dev
  libomp-dev libpcre2-dev nlohmann-json3-dev
  libopenblas0-pthread  # Debian's libtorch uses whatever libblas.so.3 is: OpenBLAS is ~50x the reference BLAS
)
if [ "${KVX_DEPS:-all}" != kvx ]; then
  packages+=(
    libgtest-dev libbenchmark-dev sqlite3
    slurm-wlm munge       # tests/slurm: a private single-node Slurm on localhost (ctest -L slurm)
  )
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Package scripts must not start daemons here (munged, slurmd, slurmctld): tests/slurm starts
# its own private ones. A temporary policy-rc.d says so when the machine has none.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod 755 /usr/sbin/policy-rc.d
  trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
fi
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
