// kvx inspect FILE.h5: list the groups, datasets (shape, type) and attributes of an HDF5 file
// (e.g. AQUA-KV predictors written by kvx calibrate, with their per-layer metrics).
#include <fmt/format.h>

#include "apps/kvx/command.h"
#include "core/higgs/predictor_file.h"

namespace {

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect", "List datasets and attributes of an HDF5 file (AQUA-KV predictors)");
  auto file = std::make_shared<std::string>();
  cmd->add_option("file", *file, "HDF5 file")->required();
  cmd->callback([file] { fmt::print("{}", kvx::higgs::describe_h5(*file)); });
}

KVX_COMMAND(61, setup);

}  // namespace
