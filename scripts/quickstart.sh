#!/usr/bin/env bash
# Build kvx, run the quickstart sweep on the embedded model and print its report.
set -euo pipefail
cd "$(dirname "$0")/.."
# only the kvx binary and what it needs (the test suite is scripts/test.sh's)
KVX_DEPS=kvx KVX_TARGETS=kvx bash scripts/build.sh
build/kvx doctor
build/kvx run configs/quickstart.yaml
build/kvx report results/kvx.db --sweep quickstart --rows method --metric ppl --baseline method=fp16
