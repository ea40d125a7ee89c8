// Evaluation protocols: what a number in a result row means (docs/methods/protocols.md).
// A protocol is a traits row (name, parameter schema, runner function) in protocol.cpp.
//
// A job is canonical JSON:
//   {"model":   {"path": DIR, "hash": sha256 of config + weights, "dtype": "float32", ...},
//    "dataset": {"path": FILE, "hash": sha256 of content, ...},
//    "protocol": {"name": "perplexity", "seq_len": 512, ...},   // defaults resolved
//    "method":  resolve_method(...) }
// run_job() returns the metrics object stored with the result row.
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "quantizers/registry.h"

namespace kvx {

class ModelCache;  // loaded models kept by a worker across jobs (experiments/model_cache.h)

struct JobContext {
  ModelCache* models = nullptr;  // may be null for protocols that need no model
  std::string device = "cpu";    // "cpu" or "cuda[:N]"
  // Called with progress in [0,1]; protocols call it at least once per window.
  std::function<void(double)> progress;
  // Checked between windows; a protocol returns early (throwing kvx::Error) when it is set.
  const volatile bool* cancel = nullptr;
  // A folder for what the jobs of a sweep share across workers (kl_divergence's full-precision
  // references), beside the database; empty: kept in memory only.
  std::string shared_dir;
};

struct ProtocolTraits {
  std::string name;
  std::string summary;
  std::vector<ParamSpec> params;
  bool needs_model = true;
  bool needs_dataset = true;
  std::function<nlohmann::json(const nlohmann::json& job, JobContext& ctx)> run;
};

const std::vector<ProtocolTraits>& protocol_table();
const ProtocolTraits* find_protocol(const std::string& name);
// {"name": ..., params...} -> defaults filled, validated (ParamError with path on failure).
nlohmann::json resolve_protocol(const nlohmann::json& spec);
// Run one job; throws kvx::Error (recorded as the job's failure) on bad input, NaN/Inf, OOM.
nlohmann::json run_job(const nlohmann::json& job, JobContext& ctx);

}  // namespace kvx
