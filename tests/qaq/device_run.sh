#!/usr/bin/env bash
# Builds test_qaq / test_qaq_mc on the GPU device machine (tree copied there, .device carried)
# and runs them; `compare` also runs the small-code-llama comparison (KVX_SLOW=1).
#   bash tests/qaq/device_run.sh build|test|compare [grid]
# Output under $OUT (logs, comparison JSON lines). Not used by CI.
set -u
step=${1:-build}
root="$(pwd)"
B=/tmp/kvx-qaq-build
if [ "$step" = build ]; then
  source .device/setup.sh >/dev/null
  cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$KVX_PREFIX" > $OUT/configure.log 2>&1 || { tail -30 $OUT/configure.log; exit 1; }
  ninja -C $B -k 0 -j 16 test_qaq test_qaq_mc > $OUT/build.log 2>&1
  grep -E "error|FAILED" $OUT/build.log | head -20
  for t in test_qaq test_qaq_mc; do
    if [ ! -x $B/tests/qaq/$t ]; then  # the tests wait on the kvx app; build ours by hand if it failed
      (cd $B && for o in $(ninja -t targets all | grep -o "tests/qaq/CMakeFiles/$t.dir/[a-z_]*.cpp.o"); do ninja -t commands $o | tail -1 | bash; done
       ninja -t commands tests/qaq/$t | tail -1 | bash)
    fi
    ls -la $B/tests/qaq/$t
  done
fi
if [ "$step" = test ] || [ "$step" = compare ]; then
  export KVX_SOURCE_DIR="$root"
  $B/tests/qaq/test_qaq > $OUT/test_qaq.log 2>&1; tail -3 $OUT/test_qaq.log
  $B/tests/qaq/test_qaq_mc > $OUT/test_qaq_mc.log 2>&1; tail -3 $OUT/test_qaq_mc.log
fi
if [ "$step" = compare ]; then
  KVX_SLOW=1 KVX_QAQ_DEVICE=${DEV:-cuda} KVX_QAQ_GRID=${2:-small} KVX_QAQ_OUT=$OUT/compare.jsonl \
    $B/tests/qaq/test_qaq_mc --gtest_filter='QaqCompare.*' > $OUT/compare.log 2>&1
  grep -A200 "Pareto" $OUT/compare.log | head -120; tail -3 $OUT/compare.log
fi
