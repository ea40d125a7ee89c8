#include "experiments/doctor.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sqlite3.h>

#ifdef KVX_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#include <filesystem>
#include <fstream>
#include <system_error>
#include <unistd.h>

#include "core/common/build_info.h"
#include "quantizers/registry.h"

namespace kvx {
namespace fs = std::filesystem;

namespace {

nlohmann::json check(const std::string& name, bool ok, bool required, const std::string& found,
                     const std::string& next = "") {
  return {{"name", name}, {"ok", ok}, {"required", required}, {"found", found}, {"next", ok ? "" : next}};
}

// The GPUs CUDA sees: name, compute capability, memory. Empty without CUDA kernels or devices.
nlohmann::json visible_gpus() {
  nlohmann::json gpus = nlohmann::json::array();
#ifdef KVX_WITH_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return gpus;
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    size_t free = 0, total = 0;
    if (cudaSetDevice(i) == cudaSuccess) (void)cudaMemGetInfo(&free, &total);
    gpus.push_back({{"index", i}, {"name", p.name}, {"capability", fmt::format("{}.{}", p.major, p.minor)},
                    {"memory_gib", double(p.totalGlobalMem) / double(1 << 30)},
                    {"free_gib", double(free) / double(1 << 30)}});
  }
#endif
  return gpus;
}

// Writes and removes a probe file in dir (creating dir): what `kvx run` will need.
std::string writable(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return fmt::format("cannot create '{}': {}", dir, ec.message());
  const std::string probe = (fs::path(dir) / fmt::format(".kvx-doctor-{}", ::getpid())).string();
  {
    std::ofstream f(probe);
    if (!(f << "probe\n")) return fmt::format("cannot write in '{}'", dir);
  }
  fs::remove(probe, ec);
  return "";
}

}  // namespace

nlohmann::json run_doctor(const DoctorOptions& o) {
  const BuildInfo& b = build_info();
  nlohmann::json r;
  nlohmann::json& checks = r["checks"] = nlohmann::json::array();
  checks.push_back(check("kvx", true, true, fmt::format("{} ({}), LibTorch {}, SQLite {}", b.version, b.git_commit,
                                                        b.torch_version, sqlite3_libversion())));
  checks.push_back(check("cuda_kernels", b.cuda_compiled, false,
                         b.cuda_compiled ? "built (fused attention, CUDA graphs)" : "not built (LibTorch without CUDA)",
                         "for GPU runs, build against a LibTorch with CUDA (bash scripts/build.sh finds it through "
                         "CMAKE_PREFIX_PATH); CPU runs need nothing more"));
  r["gpus"] = visible_gpus();
  std::string gpu_line;
  for (const auto& g : r["gpus"])
    gpu_line += fmt::format("{}{} ({}, sm {}, {:.0f} GiB, {:.0f} free)", gpu_line.empty() ? "" : "; ",
                            g["index"].get<int>(), g["name"].get<std::string>(), g["capability"].get<std::string>(),
                            g["memory_gib"].get<double>(), g["free_gib"].get<double>());
  const bool fused_here = b.cuda_compiled && !r["gpus"].empty();  // the kernels need the build and a GPU
  if (b.cuda_compiled)
    checks.push_back(check("gpus", !r["gpus"].empty(), false, r["gpus"].empty() ? "none visible" : gpu_line,
                           "no GPU is visible to CUDA: check nvidia-smi and CUDA_VISIBLE_DEVICES; jobs run on the CPU"));
  nlohmann::json& fused = r["fused_methods"] = nlohmann::json::array();
  std::string fused_line;
  for (const auto& t : method_table())
    if (t.kernels) {
      fused.push_back({{"method", t.name}, {"kernels", t.kernels}, {"here", fused_here}});
      fused_line += (fused_line.empty() ? "" : ", ") + t.name;
    }
  checks.push_back(check("fused_kernels", fused_here, false,
                         fused_here ? fused_line + " run fused here"
                                                       : fused_line + " run their CPU reference here",
                         "fused attention needs the CUDA build and a visible GPU"));
  const std::string not_writable = writable(o.results_dir);
  checks.push_back(check("results", not_writable.empty(), true,
                         not_writable.empty() ? fmt::format("'{}' is writable", o.results_dir) : not_writable,
                         "run from a folder you can write to, or pass --results DIR (kvx run writes its database "
                         "where the config's `db:` says)"));
  std::string models;
  std::error_code ec;
  const fs::path mdir = fs::path(o.data_dir) / "models";
  if (fs::is_directory(mdir, ec))
    for (const auto& e : fs::directory_iterator(mdir, ec))
      if (fs::exists(e.path() / "config.json")) models += (models.empty() ? "" : ", ") + e.path().filename().string();
  checks.push_back(check("fixtures", !models.empty(), true,
                         models.empty() ? fmt::format("no model folder with a config.json under '{}'", mdir.string())
                                        : fmt::format("{} in '{}'", models, mdir.string()),
                         "run from the repository root (the fixtures are in data/models) or pass --data DIR"));
  bool ok = true;
  for (const auto& c : checks) ok = ok && (c["ok"].get<bool>() || !c["required"].get<bool>());
  r["ok"] = ok;
  return r;
}

std::string format_doctor(const nlohmann::json& r) {
  std::string s;
  for (const auto& c : r["checks"]) {
    const bool ok = c["ok"].get<bool>();
    s += fmt::format("{:<5} {:<14} {}\n", ok ? "ok" : c["required"].get<bool>() ? "FAIL" : "note",
                     c["name"].get<std::string>(), c["found"].get<std::string>());
    if (!ok) s += fmt::format("{:<20} next: {}\n", "", c["next"].get<std::string>());
  }
  s += r["ok"].get<bool>() ? "kvx is ready: try `build/kvx run configs/quickstart.yaml`\n"
                           : "kvx is not ready: see the FAIL lines above\n";
  return s;
}

}  // namespace kvx
