// kvx calibrate [CONFIG.yaml] [flags]: fit AQUA-KV predictors (experiments/calibrate_aqua.h) and
// write one HDF5 file. Flags override the config's keys.
#include <fmt/format.h>

#include <filesystem>

#include "apps/kvx/command.h"
#include "core/common/error.h"
#include "core/grid/identity.h"
#include "core/grid/yaml_json.h"
#include "experiments/calibrate_aqua.h"

namespace {

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand("calibrate", "Fit AQUA-KV predictors in the quantization loop; write HDF5");
  struct Args {
    std::string config, model, corpus, out, device, dtype;
    int64_t nsamples = -1, valid = -1, seqlen = -1, d = -1, n = -1, g = -1;
    double percdamp = -1;
    int64_t seed = -1;
    std::string backbone;
    bool force = false, quiet = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("config", a->config, "calibration config (YAML, e.g. configs/aqua.yaml)");
  cmd->add_option("--model", a->model, "model folder");
  cmd->add_option("--corpus", a->corpus, "calibration text (default data/wikitext-2/valid.txt)");
  cmd->add_option("-o,--out", a->out, "output HDF5 file");
  cmd->add_option("--nsamples", a->nsamples, "calibration sequences, train + valid (default 32)");
  cmd->add_option("--valid-nsamples", a->valid, "held-out sequences (default 4)");
  cmd->add_option("--seqlen", a->seqlen, "tokens per sequence (default 1024; 0 = model context)");
  cmd->add_option("--percdamp", a->percdamp, "ridge damping relative to mean diag (default 1e-3)");
  cmd->add_option("--seed", a->seed, "sampling and split seed (default 0)");
  cmd->add_option("-d,--edenn-d", a->d, "HIGGS dimension d (default 2)");
  cmd->add_option("-n,--edenn-n", a->n, "HIGGS grid size n (default 16)");
  cmd->add_option("-g,--hadamard-groupsize", a->g, "Hadamard group (default 1024)");
  cmd->add_option("--backbone", a->backbone, "higgs or affine");
  cmd->add_option("--device", a->device, "cpu or cuda[:N]");
  cmd->add_option("--dtype", a->dtype, "float32 | bfloat16 | float16");
  cmd->add_flag("--force", a->force, "overwrite an existing output file");
  cmd->add_flag("-q,--quiet", a->quiet, "no progress output");
  cmd->callback([a] {
    nlohmann::json cfg = nlohmann::json::object();
    std::string where = "kvx calibrate";
    if (!a->config.empty()) {
      cfg = kvx::grid::load_yaml_file(a->config).root;
      where = a->config;
      // Paths in the config are relative to its folder (as in sweep configs).
      const std::string base = std::filesystem::path(a->config).parent_path().string();
      for (const char* k : {"model", "corpus", "out"})
        if (cfg.is_object() && cfg.contains(k) && cfg[k].is_string())
          cfg[k] = kvx::grid::absolute_path(cfg[k].get<std::string>(), base.empty() ? "." : base);
    }
    if (!cfg.is_object()) throw kvx::error("{}: expected a mapping", where);
    if (!a->model.empty()) cfg["model"] = a->model;
    if (!a->corpus.empty()) cfg["corpus"] = a->corpus;
    if (!a->out.empty()) cfg["out"] = a->out;
    if (!a->device.empty()) cfg["device"] = a->device;
    if (!a->dtype.empty()) cfg["dtype"] = a->dtype;
    if (a->nsamples >= 0) cfg["nsamples"] = a->nsamples;
    if (a->valid >= 0) cfg["valid_nsamples"] = a->valid;
    if (a->seqlen >= 0) cfg["seqlen"] = a->seqlen;
    if (a->percdamp >= 0) cfg["percdamp"] = a->percdamp;
    if (a->seed >= 0) cfg["seed"] = a->seed;
    if (a->d >= 0) cfg["quantizer"]["edenn_d"] = a->d;
    if (a->n >= 0) cfg["quantizer"]["edenn_n"] = a->n;
    if (a->g >= 0) cfg["quantizer"]["hadamard_groupsize"] = a->g;
    if (!a->backbone.empty()) cfg["quantizer"]["backbone"] = a->backbone;
    if (a->force) cfg["force"] = true;
    auto o = kvx::calibrate_options_from_json(cfg, where);
    o.quiet = a->quiet;
    const auto r = kvx::calibrate_aqua(o);
    double kv = 0, vv = 0;
    int cnt = 0;
    const auto& kr = r.metrics.at("key_relmse_valid");
    const auto& vr = r.metrics.at("value_relmse_valid");
    for (size_t l = 1; l < kr.size(); ++l) kv += kr[l], vv += vr[l], ++cnt;
    fmt::print("wrote {} ({} layers; mean valid relMSE: keys {:.4f}, values {:.4f})\n", r.path,
               r.attrs["n_layers"].get<int64_t>(), cnt ? kv / cnt : 0.0, cnt ? vv / cnt : 0.0);
  });
}

KVX_COMMAND(60, setup);

}  // namespace
