// What `kvx bench decode|prefill|eval` share: real model shapes, the product's model built at such a
// shape with random weights (core/model: random_llama), caches built through the method registry,
// device timing and the copy bandwidth measured in the same run. Random weights are allowed in
// benchmarks only.
#pragma once
#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include <functional>
#include <memory>
#include <string>

#include "core/cache/kv_cache_policy.h"
#include "core/model/model_config.h"

namespace kvx {

class CausalLM;

struct ModelShape {
  std::string name;
  int64_t layers, heads, kv_heads, head_dim, hidden, intermediate, vocab;
};

// "llama3-8b" | "llama2-7b" | "mistral-7b" | "qwen2-7b", "tiny" (CPU smoke tests), or a path
// to a config.json.
ModelShape model_shape(const std::string& name_or_config);
// A Llama-family config of that shape (RoPE base 500000 for llama3-8b, else 10000; untied head).
ModelConfig shape_config(const ModelShape& s);

namespace bench {

// Waits for the device's queued work (no-op on CPU).
void sync(const at::Device& d);
// Median wall time in microseconds of fn over iters samples (after two warm-ups); each sample runs
// fn `inner` times back to back and one synchronization, so that short kernels are timed without
// the host's synchronize round trip.
double time_us(const at::Device& dev, int iters, const std::function<void()>& fn, int inner = 1);
// Device time of fn: `inner` calls captured once into a CUDA graph and replayed (no host dispatch
// in the measurement). Negative when capture is not possible (CPU, or fn synchronizes).
double graph_time_us(const at::Device& dev, int iters, const std::function<void()>& fn, int inner);
// Copy bandwidth of the device (read + write bytes per second), measured now.
double copy_bandwidth_gbs(const at::Device& dev, int iters);

// Dense matmul rate of the device in the dtype (FLOP/s, a square GEMM timed now): the compute
// ceiling of the rooflines below.
double matmul_flops(const at::Device& dev, at::ScalarType dtype, int iters);

// The roofline of `tokens` tokens that take `forwards` forward calls of a model of shape s (every
// weight read once per call, elem bytes each) and read `kv_read_bytes` of cache in all, attending
// to `attended` cached-or-own entries per token summed over the tokens: the time the bytes take at
// the copy bandwidth and the time the FLOPs (2 per weight per token, 4·L·Hq·D per attended entry)
// take at the matmul rate; the larger one bounds.
struct Roofline {
  double bytes = 0, flops = 0;
  double seconds = 0;  // max of the two times
  std::string bound;   // "bandwidth" | "compute"
};
Roofline roofline(const ModelShape& s, int64_t elem, double tokens, double forwards, double kv_read_bytes, double attended,
                  double copy_bytes_per_s, double flops_per_s);
// The weights' bytes (every matrix once, norms included).
double weight_bytes(const ModelShape& s, int64_t elem);
// row["roofline_tok_s"], row["roofline_fraction"] (measured tokens/s over it), row["roofline_bound"].
void write_roofline(nlohmann::json& row, const Roofline& r, double tokens, double tokens_per_s);

// A resolved method spec for a shorthand (`kvx eval --method` grammar), "fp16" meaning none.
nlohmann::json bench_method(const std::string& shorthand);
// ModelInfo of a model with n_layers (<= the model's) on its device and dtype.
ModelInfo bench_info(const CausalLM& model, int64_t n_layers);
// Fills `layers` layers of a reset policy with `tokens` random keys and values per sequence (one
// append per layer: the state right after a prefill of that length).
void fill_cache(KVCachePolicy& policy, const ModelInfo& info, int64_t batch, int64_t tokens, int64_t layers);

}  // namespace bench
}  // namespace kvx
