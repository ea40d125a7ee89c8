// Each subcommand lives in its own cmd_<name>.cpp and registers itself with KVX_COMMAND, so a
// subcommand that is not built is not listed. Commands only parse arguments and call a library
// function; kvx::Error escaping a command is printed as one line and exits with status 2.
#pragma once
#include <CLI/CLI.hpp>

#include <functional>
#include <vector>

namespace kvx::cli {

using CommandSetup = std::function<void(CLI::App& app)>;
// Order in --help follows `order` (then registration order).
int register_command(int order, CommandSetup setup);
const std::vector<std::pair<int, CommandSetup>>& commands();

}  // namespace kvx::cli

#define KVX_CLI_CAT2(a, b) a##b
#define KVX_CLI_CAT(a, b) KVX_CLI_CAT2(a, b)
#define KVX_COMMAND(order, fn) \
  static const int KVX_CLI_CAT(kvx_command_, __LINE__) = ::kvx::cli::register_command(order, fn)
