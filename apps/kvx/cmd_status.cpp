// kvx status DB: done / running / failed / pending per sweep, failed jobs' errors, ETA.
#include <cstdio>
#include <optional>

#include "apps/kvx/command.h"
#include "core/report/status.h"

namespace {

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand("status", "Show a results database's sweeps: done/running/failed/pending, ETA");
  auto db = std::make_shared<std::string>();
  auto sweep = std::make_shared<std::string>();
  auto format = std::make_shared<std::string>("text");
  cmd->add_option("db", *db, "results database")->required();
  cmd->add_option("--sweep", *sweep, "only this sweep");
  cmd->add_option("--format", *format, "text or json")->check(CLI::IsMember({"text", "json"}));
  cmd->callback([db, sweep, format] {
    std::string out = kvx::report::sweep_status(*db, sweep->empty() ? std::nullopt : std::optional<std::string>(*sweep), *format);
    std::fwrite(out.data(), 1, out.size(), stdout);
  });
}

KVX_COMMAND(30, setup);

}  // namespace
