// kvx doctor: what this kvx can do here (build, GPUs, fused kernels, results folder, fixtures).
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/kvx/command.h"
#include "experiments/doctor.h"

namespace {

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand("doctor", "Check what this kvx can do here; exits 1 when something a command needs is missing");
  auto opt = std::make_shared<kvx::DoctorOptions>();
  auto format = std::make_shared<std::string>("text");
  cmd->add_option("--results", opt->results_dir, "folder kvx run writes to")->capture_default_str();
  cmd->add_option("--data", opt->data_dir, "folder of the fixtures (models/<name>/config.json)")->capture_default_str();
  cmd->add_option("--format", *format, "text or json")->check(CLI::IsMember({"text", "json"}));
  cmd->callback([opt, format] {
    const nlohmann::json r = kvx::run_doctor(*opt);
    fmt::print("{}", *format == "json" ? r.dump(2) + "\n" : kvx::format_doctor(r));
    if (!r["ok"].get<bool>()) throw CLI::RuntimeError(1);  // exit status 1, the report already printed
  });
}

KVX_COMMAND(95, setup);

}  // namespace
