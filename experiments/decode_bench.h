// `kvx bench decode`: decode-attention time and end-to-end decode tokens/s at real model shapes with
// random weights (the only place they are allowed), through the product's code: the cache of each
// method is built by the registry (make_policy(resolve_method(...)), the same grammar and defaults
// as `kvx eval --method`), filled with `context` tokens, and decoded by core/model's CausalLM.
// Every method is measured in the same run as the fp16 baselines and printed as a ratio against
// them, beside the bandwidth roofline of its shape.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "experiments/bench_model.h"

namespace kvx {

struct DecodeBenchOptions {
  std::string shape = "llama3-8b";
  int64_t context = 32768;
  int64_t batch = 8;
  std::vector<std::string> methods = {"kvq:k4v4", "kvq:k2v2"};  // `kvx eval --method` shorthands
  int iters = 20;          // timed attention samples (median reported)
  int64_t steps = 128;     // decode steps timed end to end (flushes of the residual included)
  bool end_to_end = true;  // also time whole decode steps through all layers
  std::string decode = "auto";  // decode steps: auto | cuda_graph | eager (core/model/decode_steps.h)
  std::string device = "cuda";
  std::string dtype = "";  // "" = bfloat16 on CUDA, float32 on CPU
};

// Returns {"shape", "context", "batch", "device", "dtype", "copy_bandwidth_gbs", "rows": [{method,
// label, kernel_path, attention_impl, attn_us, bandwidth_gbs, attn_speedup_vs_fp16, kv_bytes_per_layer,
// decode_tok_s, decode_speedup_vs_fp16, roofline_tok_s, roofline_fraction, ...}]}.
nlohmann::json run_decode_bench(const DecodeBenchOptions& opt);
std::string format_decode_bench(const nlohmann::json& result);

}  // namespace kvx
