// `kvx doctor`: what this kvx can do here. Each check says what it found and, where something a
// command needs is missing, the next step; `ok` is false when a required check fails.
#pragma once
#include <nlohmann/json_fwd.hpp>

#include <string>

namespace kvx {

struct DoctorOptions {
  std::string results_dir = "results";  // where `kvx run` writes databases and plots
  std::string data_dir = "data";        // the fixtures (data/models/<name>/config.json)
};

// {"ok": bool, "checks": [{"name", "ok", "required", "found", "next"}], "gpus": [...],
//  "fused_methods": [...]}
nlohmann::json run_doctor(const DoctorOptions& options);
std::string format_doctor(const nlohmann::json& report);

}  // namespace kvx
