#!/usr/bin/env bash
# Configure and build kvx into build/ (Release with debug info, Ninja, ccache when present).
# KVX_TARGETS="kvx" builds only those targets (the test suite is then neither configured nor
# built unless it was before); extra arguments go to cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
tests=()
[ -n "${KVX_TARGETS:-}" ] && [ ! -f build/CMakeCache.txt ] && tests=(-DKVX_BUILD_TESTS=OFF)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "${tests[@]}" "$@" >/dev/null
# shellcheck disable=SC2086  # KVX_TARGETS is a list of target names
cmake --build build -j "$(nproc)" ${KVX_TARGETS:+--target $KVX_TARGETS}
