#!/usr/bin/env bash
# Build kvx and run the whole test suite with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
# Doc references must resolve in the checkout (seconds, and no build needed to find a dead link).
bash scripts/check_doc_links.sh
bash scripts/build.sh -DKVX_BUILD_TESTS=ON  # on, also after a quickstart build configured without
# The Slurm test (label slurm) starts its own Slurm daemons: run it alone, after the rest.
cd build && ctest --output-on-failure -j "$(nproc)" -LE slurm
ctest --output-on-failure -L slurm
