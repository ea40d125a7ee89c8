#include "experiments/throughput_bench.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/common/error.h"
#include "core/model/attention.h"
#include "core/model/model.h"
#include "core/model/rope.h"
#include "experiments/bench_common.h"
#include "quantizers/registry.h"

namespace kvx {
namespace {

// The layer stack of decode_bench at full sequence length: RoPE on q and k, attention through
// `cache` exactly as the models call it. Returns logits [B, n, V] fp32 (n = all positions, or
// only the last one).
at::Tensor forward(const at::Tensor& x_in, int64_t pos0, KVCachePolicy& cache, const ModelShape& s,
                   const bench::RandomWeights& w, const Rope& rope, bool last_only, std::string& impl) {
  const int64_t B = x_in.size(0), T = x_in.size(1), qd = s.heads * s.head_dim, kd = s.kv_heads * s.head_dim;
  AttentionOptions ao;
  ao.scale = 1.0 / std::sqrt(double(s.head_dim));
  StepInfo step;
  step.pos0 = pos0;
  step.n_new = T;
  step.rope = &rope;
  auto heads = [&](const at::Tensor& t, int64_t h) { return t.view({B, T, h, s.head_dim}).transpose(1, 2); };
  auto x = x_in;
  for (int64_t l = 0; l < s.layers; ++l) {
    auto qkv = at::matmul(bench::rms_norm(x, w.norm), w.qkv);
    auto q = rope.apply_range(heads(qkv.narrow(2, 0, qd), s.heads), pos0);
    auto k = rope.apply_range(heads(qkv.narrow(2, qd, kd), s.kv_heads), pos0);
    auto v = heads(qkv.narrow(2, qd + kd, kd), s.kv_heads).contiguous();
    auto a = cached_attention(q, k, v, int(l), step, cache, ao, impl);  // [B, T, Hq·D]
    x = x + at::matmul(a.to(x.scalar_type()), w.o);
    x = x + bench::mlp(bench::rms_norm(x, w.norm), w, s);
  }
  cache.end_step(step);
  if (last_only) x = x.narrow(1, T - 1, 1);
  return at::matmul(bench::rms_norm(x, w.norm), w.lm_head).to(at::kFloat);
}

struct Run {
  double seconds = 0;
  std::string impl;
  int64_t kv_bytes = 0;
};

Run run_once(const std::string& mode, const nlohmann::json& method, const ThroughputBenchOptions& o, const ModelShape& s,
             const bench::RandomWeights& w, const Rope& rope, const at::Tensor& x, const at::Tensor& targets,
             const at::Device& dev) {
  std::unique_ptr<KVCachePolicy> policy = make_policy(method);
  ModelInfo info;
  info.n_layers = s.layers;
  info.n_heads = s.heads;
  info.n_kv_heads = s.kv_heads;
  info.head_dim = s.head_dim;
  info.dtype = x.scalar_type();
  info.device = dev;
  info.rope = &rope;
  bench::sync(dev);
  const auto t0 = std::chrono::steady_clock::now();
  policy->reset(info, o.batch);
  Run r;
  if (mode == "prefill") {
    (void)forward(x, 0, *policy, s, w, rope, true, r.impl).argmax(-1);
  } else {
    // NLL accumulates on the device and is read once: no per-chunk host round trip in the timing
    at::Tensor acc = at::zeros({}, x.options().dtype(at::kDouble));
    for (int64_t c0 = 0; c0 < o.context; c0 += o.chunk) {
      const int64_t n = std::min(o.chunk, o.context - c0);
      auto logits = forward(x.narrow(1, c0, n), c0, *policy, s, w, rope, false, r.impl);
      auto lp = at::log_softmax(logits, -1);
      acc -= lp.gather(2, targets.narrow(1, c0, n).unsqueeze(2)).to(at::kDouble).sum();
    }
    const double nll = acc.item<double>();
    if (!std::isfinite(nll)) throw error("bench eval: NLL became {} ({})", nll, method_label(method));
  }
  bench::sync(dev);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.kv_bytes = policy->memory().device_bytes();
  return r;
}

}  // namespace

nlohmann::json run_throughput_bench(const std::string& mode, const ThroughputBenchOptions& o) {
  if (mode != "prefill" && mode != "eval") throw error("bench: unknown mode '{}' (prefill or eval)", mode);
  if (o.context < 1 || o.batch < 1 || o.chunk < 1 || o.iters < 1)
    throw error("bench {}: context, batch, chunk and iters must be positive", mode);
  const ModelShape s = model_shape(o.shape);
  if (o.device != "cpu" && !at::hasCUDA()) throw error("bench {}: no CUDA device (use --device cpu for a small CPU run)", mode);
  const at::Device dev(o.device == "cpu" ? "cpu" : "cuda");
  const at::ScalarType dt = parse_compute_dtype(o.dtype.empty() ? (dev.is_cuda() ? "bfloat16" : "float32") : o.dtype);
  c10::InferenceMode guard;
  const auto opt = at::TensorOptions().device(dev).dtype(dt);
  const bench::RandomWeights w = bench::random_weights(s, opt);
  const Rope rope(s.head_dim, RopeConfig{}, o.context, dev);
  // Embedded tokens stand in for the embedding lookup (a gather, negligible next to the layers).
  const at::Tensor x = at::randn({o.batch, o.context, s.hidden}, opt);
  const at::Tensor targets = at::randint(0, s.vocab, {o.batch, o.context}, at::TensorOptions().device(dev).dtype(at::kLong));

  std::vector<std::pair<std::string, nlohmann::json>> methods = {{"fp16", resolve_method(parse_method_shorthand("none"))}};
  for (const auto& m : o.methods) methods.emplace_back(m, resolve_method(parse_method_shorthand(m)));

  nlohmann::json out;
  out["mode"] = mode;
  out["shape"] = s.name;
  out["context"] = o.context;
  out["batch"] = o.batch;
  if (mode == "eval") out["chunk"] = o.chunk;
  out["device"] = dev.is_cuda() ? "cuda" : "cpu";
  out["dtype"] = std::string(c10::toString(dt));
  out["timing"] = fmt::format("median of {} runs after one warm-up; tokens = batch x context", o.iters);
  double base = 0;
  for (const auto& [name, spec] : methods) {
    (void)run_once(mode, spec, o, s, w, rope, x, targets, dev);  // warm-up: allocator, kernels, lazy init
    std::vector<Run> runs;
    for (int i = 0; i < o.iters; ++i) runs.push_back(run_once(mode, spec, o, s, w, rope, x, targets, dev));
    std::sort(runs.begin(), runs.end(), [](const Run& a, const Run& b) { return a.seconds < b.seconds; });
    const Run& r = runs[runs.size() / 2];
    nlohmann::json row;
    row["method"] = name;
    row["label"] = method_label(spec);
    row["seconds"] = r.seconds;
    row["tokens_per_s"] = double(o.batch * o.context) / r.seconds;
    if (name == "fp16") base = row["tokens_per_s"].get<double>();
    row["ratio_vs_fp16"] = row["tokens_per_s"].get<double>() / base;
    row["attention_impl"] = r.impl;
    row["kernel_path"] = dev.is_cpu() ? std::string("cpu") : r.impl;
    row["kv_bytes"] = r.kv_bytes;
    out["rows"].push_back(row);
  }
  return out;
}

std::string format_throughput_bench(const nlohmann::json& r) {
  std::string s = fmt::format("{} bench: {} batch {} context {}{} on {} ({})\n", r["mode"].get<std::string>(),
                              r["shape"].get<std::string>(), r["batch"].get<int64_t>(), r["context"].get<int64_t>(),
                              r.contains("chunk") ? fmt::format(" chunk {}", r["chunk"].get<int64_t>()) : "",
                              r["device"].get<std::string>(), r["dtype"].get<std::string>());
  s += fmt::format("{:<20} {:>10} {:>12} {:>8} {:>10} {:>12}\n", "method", "seconds", "tok/s", "x fp16", "attn", "KV MB");
  for (const auto& row : r["rows"])
    s += fmt::format("{:<20} {:>10.4f} {:>12.1f} {:>8.2f} {:>10} {:>12.2f}\n", row["method"].get<std::string>(),
                     row["seconds"].get<double>(), row["tokens_per_s"].get<double>(), row["ratio_vs_fp16"].get<double>(),
                     row["attention_impl"].get<std::string>(), row["kv_bytes"].get<int64_t>() / 1048576.0);
  return s;
}

}  // namespace kvx
