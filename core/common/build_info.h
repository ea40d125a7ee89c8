// What this binary is: recorded in every result row and printed by `kvx --version`.
#pragma once
#include <string>

namespace kvx {

struct BuildInfo {
  std::string version;      // project version, e.g. "0.1.0"
  std::string git_commit;   // short commit of the source tree at configure time
  std::string torch_version;
  bool cuda_compiled;       // kvx CUDA kernels built in
};

const BuildInfo& build_info();
// Version of the evaluation code that enters every job key: bump when a protocol or a
// method changes numerically, so cached rows from older code are not reused.
constexpr const char* kEvalCodeVersion = "1";

}  // namespace kvx
