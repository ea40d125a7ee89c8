// libFuzzer harness for longer local runs of the parser fuzzing (built only with a clang that
// has -fsanitize=fuzzer; see tests/reliability/README.md). The first byte picks the format,
// the rest is the file. kvx::Error is a correct outcome; any other exception aborts (a bug).
//   CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DKVX_SANITIZE=address,undefined
//   ninja -C build-fuzz fuzz_parsers && build-fuzz/tests/reliability/fuzz_parsers -max_total_time=600
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/common/error.h"
#include "tests/reliability/fuzz_targets.h"

namespace {
std::string case_dir() {
  static const std::string d = [] {
    std::string t = (std::filesystem::temp_directory_path() / "kvx-libfuzzer-XXXXXX").string();
    if (!mkdtemp(t.data())) std::abort();
    return t;
  }();
  return d;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const auto& formats = kvx::fuzz::formats();
  const auto& fi = formats[data[0] % formats.size()];
  if (fi.format == kvx::fuzz::Format::IndexJson) return 0;  // needs the shards next to it
  const std::string path = case_dir() + "/" + fi.file_name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  std::fwrite(data + 1, 1, size - 1, f);
  std::fclose(f);
  try {
    kvx::fuzz::run_target(fi.format, path);
  } catch (const kvx::Error&) {
  }
  return 0;
}
