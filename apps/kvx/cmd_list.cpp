// kvx list: the traits table of methods and protocols (ggml's type_traits, printed).
#include <fmt/format.h>

#include "apps/kvx/command.h"
#include "experiments/protocol.h"
#include "quantizers/registry.h"

namespace {

std::string param_line(const kvx::ParamSpec& p) {
  std::string d = p.def.is_null() ? "required" : p.def.dump();
  std::string c;
  for (const auto& x : p.choices) c += (c.empty() ? " {" : "|") + x;
  if (!c.empty()) c += "}";
  return fmt::format("      {:<26} default {:<10}{}  {}", p.name, d, c, p.help);
}

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand("list", "List registered methods (traits table) and protocols");
  auto verbose = std::make_shared<bool>(false);
  auto format = std::make_shared<std::string>("text");
  cmd->add_flag("-v,--verbose", *verbose, "show every parameter with its default and range");
  cmd->add_option("--format", *format, "text or json")->check(CLI::IsMember({"text", "json"}));
  cmd->callback([verbose, format] {
    if (*format == "json") {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& t : kvx::method_table()) {
        nlohmann::json params = nlohmann::json::array();
        for (const auto& p : t.params)
          params.push_back({{"name", p.name}, {"default", p.def}, {"choices", p.choices}, {"help", p.help}});
        out.push_back({{"name", t.name}, {"kind", t.kind == kvx::ComponentKind::Codec ? "codec" : "policy"},
                       {"bits", t.bits}, {"needs_attention", t.needs_attention},
                       {"needs_calibration", t.needs_calibration}, {"batches", t.batches},
                       {"kernels", t.kernels ? nlohmann::json(t.kernels) : nlohmann::json()},
                       {"summary", t.summary}, {"params", params}});
      }
      fmt::print("{}\n", out.dump(2));
      return;
    }
    fmt::print("{:<16} {:<7} {:<8} {:<5} {:<5} {:<5} {:<5} {}\n", "method", "kind", "bits", "attn", "calib",
               "fused", "batch", "summary");
    for (const auto& t : kvx::method_table()) {
      fmt::print("{:<16} {:<7} {:<8} {:<5} {:<5} {:<5} {:<5} {}\n", t.name,
                 t.kind == kvx::ComponentKind::Codec ? "codec" : "policy", t.bits,
                 t.needs_attention ? "yes" : "-", t.needs_calibration ? "yes" : "-",
                 t.kernels ? "cuda" : "-", t.batches ? "yes" : "1", t.summary);
      if (*verbose && t.kernels) fmt::print("      kernels: {}\n", t.kernels);
      if (*verbose)
        for (const auto& p : t.params) fmt::print("{}\n", param_line(p));
    }
    fmt::print("\n{:<16} {}\n", "protocol", "summary");
    for (const auto& p : kvx::protocol_table()) {
      fmt::print("{:<16} {}\n", p.name, p.summary);
      if (*verbose)
        for (const auto& s : p.params) fmt::print("{}\n", param_line(s));
    }
  });
}

KVX_COMMAND(90, setup);

}  // namespace
