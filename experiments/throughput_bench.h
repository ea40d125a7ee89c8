// `kvx bench prefill` and `kvx bench eval`: tokens/s of core/model's CausalLM with random weights
// at a real model shape (experiments/bench_model.h), each method's cache built by the registry,
// fp16 (no compression) and every method measured in the same run and printed as a ratio against
// fp16.
//   prefill: one forward over `context` tokens of `batch` sequences (logits of the last token).
//   eval:    the perplexity protocol's feeding (experiments/perplexity.h): a fresh policy, the
//            `context` tokens in chunks of `chunk`, log-softmax and the target NLL per chunk.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace kvx {

struct ThroughputBenchOptions {
  std::string shape = "llama3-8b";
  int64_t context = 4096;
  int64_t batch = 1;
  std::vector<std::string> methods = {"kvq:k4v4"};  // `kvx eval --method` shorthands
  int64_t chunk = 32;                               // eval only
  int iters = 3;                                    // timed repetitions (median reported)
  std::string device = "cuda";
  std::string dtype = "";                           // "" = bfloat16 on CUDA, float32 on CPU
};

// mode: "prefill" or "eval". Returns {"mode", "shape", "context", "batch", "device", "dtype",
// "rows": [{method, label, seconds, tokens_per_s, ratio_vs_fp16, kernel_path, attention_impl, kv_bytes}]}.
nlohmann::json run_throughput_bench(const std::string& mode, const ThroughputBenchOptions& opt);
std::string format_throughput_bench(const nlohmann::json& result);

}  // namespace kvx
