#include <ATen/Context.h>
#include <fmt/format.h>
#include <torch/version.h>

#include <algorithm>
#include <cstdio>

#include "apps/kvx/command.h"
#include "core/common/build_info.h"
#include "core/common/error.h"

namespace kvx::cli {

static std::vector<std::pair<int, CommandSetup>>& registry() {
  static std::vector<std::pair<int, CommandSetup>> r;
  return r;
}
int register_command(int order, CommandSetup setup) {
  registry().emplace_back(order, std::move(setup));
  return 0;
}
const std::vector<std::pair<int, CommandSetup>>& commands() { return registry(); }

static std::string version_text() {
  const auto& b = kvx::build_info();
  return fmt::format("kvx {} (commit {})\ntorch {}\ncuda kernels: {}\ncuda available: {}", b.version,
                     b.git_commit, TORCH_VERSION, b.cuda_compiled ? "built" : "not built",
                     at::hasCUDA() ? "yes" : "no");
}

}  // namespace kvx::cli

int main(int argc, char** argv) {
  CLI::App app{"kvx: measure how KV-cache compression changes a language model's quality, memory and speed"};
  app.require_subcommand(1);
  app.set_version_flag("--version", [] { return kvx::cli::version_text(); });
  auto cmds = kvx::cli::commands();
  std::stable_sort(cmds.begin(), cmds.end(), [](auto& a, auto& b) { return a.first < b.first; });
  for (auto& c : cmds) c.second(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const kvx::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "kvx: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "kvx: internal error: %s\n", e.what());
    return 3;
  }
  return 0;
}
