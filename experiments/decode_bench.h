// `kvx bench decode`: decode-attention and end-to-end decode throughput at real model shapes
// with random weights (DESIGN.md: the only place random weights are allowed). Every method is
// measured in the same run as the fp16 baselines and printed as a ratio against them.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace kvx {

struct ModelShape {
  std::string name;
  int64_t layers, heads, kv_heads, head_dim, hidden, intermediate, vocab;
};

// "llama3-8b" | "llama2-7b" | "mistral-7b" | "qwen2-7b", "tiny" (CPU smoke tests), or a path
// to a config.json.
ModelShape model_shape(const std::string& name_or_config);

struct DecodeBenchOptions {
  std::string shape = "llama3-8b";
  int64_t context = 32768;
  int64_t batch = 8;
  // kvq:k<b>v<b>[:g<G>] | int8[:s<sinks>w<window>] | higgs[:d<dim>n<points>][:g<group>]
  std::vector<std::string> methods = {"kvq:k4v4", "kvq:k2v2"};
  int64_t residual = 64;  // full-precision recent tokens kept beside the packed cache
  int iters = 20;
  bool end_to_end = true;  // also time whole decode steps through all layers
  std::string device = "cuda";
};

// Returns {"device", "copy_bandwidth_gbs", "rows": [{method, attn_us, bandwidth_gbs,
// speedup_vs_sdpa, kv_bytes, decode_tok_s, ...}]}.
nlohmann::json run_decode_bench(const DecodeBenchOptions& opt);
std::string format_decode_bench(const nlohmann::json& result);

}  // namespace kvx
