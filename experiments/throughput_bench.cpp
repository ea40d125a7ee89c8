#include "experiments/throughput_bench.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/common/error.h"
#include "core/model/decode_steps.h"
#include "core/model/model.h"
#include "experiments/bench_model.h"
#include "quantizers/registry.h"

namespace kvx {
namespace {

struct Run {
  double seconds = 0;
  AttentionPaths paths;
  int64_t kv_bytes = 0;
};

// One prefill (a forward over the whole context, logits of the last token) or one perplexity
// evaluation (the context in chunks, log-softmax and the target NLL per chunk, accumulated on the
// device and read once) through the model with a fresh cache of the method. ids: [B, context + 1]
// (the last column is the last token's target).
Run run_once(const std::string& mode, const nlohmann::json& method, const ThroughputBenchOptions& o, CausalLM& model,
             const at::Tensor& ids) {
  const at::Device dev = model.device();
  std::unique_ptr<KVCachePolicy> policy = make_policy(method);
  bench::sync(dev);
  const auto t0 = std::chrono::steady_clock::now();
  policy->reset(model.info(), o.batch);
  Run r;
  if (mode == "prefill") {
    (void)model.forward(ids.narrow(1, 0, o.context), 0, *policy).select(1, -1).argmax(-1);
  } else {
    at::Tensor acc = at::zeros({}, at::TensorOptions().device(dev).dtype(at::kDouble));
    DecodeSteps steps(model, *policy, default_step_mode(model));  // one-token chunks as the protocols run them
    for (int64_t c0 = 0; c0 < o.context; c0 += o.chunk) {
      const int64_t n = std::min(o.chunk, o.context - c0);
      auto lp = at::log_softmax(steps.forward(ids.narrow(1, c0, n), c0), -1);
      acc -= lp.gather(2, ids.narrow(1, c0 + 1, n).unsqueeze(2)).to(at::kDouble).sum();
    }
    const double nll = acc.item<double>();
    if (!std::isfinite(nll)) throw error("bench eval: NLL became {} ({})", nll, method_label(method));
  }
  bench::sync(dev);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.kv_bytes = policy->memory().device_bytes();
  r.paths = policy->paths();
  return r;
}

}  // namespace

nlohmann::json run_throughput_bench(const std::string& mode, const ThroughputBenchOptions& o) {
  if (mode != "prefill" && mode != "eval") throw error("bench: unknown mode '{}' (prefill or eval)", mode);
  if (o.context < 1 || o.batch < 1 || o.chunk < 1 || o.iters < 1)
    throw error("bench {}: context, batch, chunk and iters must be positive", mode);
  const ModelShape s = model_shape(o.shape);
  if (o.device != "cpu" && !at::hasCUDA()) throw error("bench {}: no CUDA device (use --device cpu for a small CPU run)", mode);
  const std::string dtype = o.dtype.empty() ? (o.device == "cpu" ? "float32" : "bfloat16") : o.dtype;
  c10::InferenceMode guard;
  auto model = random_llama(shape_config(s), o.device == "cpu" ? "cpu" : "cuda", dtype);
  const at::Device dev = model->device();
  const at::Tensor ids = at::randint(0, s.vocab, {o.batch, o.context + 1}, at::TensorOptions().device(dev).dtype(at::kLong));

  std::vector<std::pair<std::string, nlohmann::json>> methods = {{"fp16", bench::bench_method("fp16")}};
  for (const auto& m : o.methods) methods.emplace_back(m, bench::bench_method(m));

  nlohmann::json out;
  out["mode"] = mode;
  out["shape"] = s.name;
  out["context"] = o.context;
  out["batch"] = o.batch;
  if (mode == "eval") out["chunk"] = o.chunk;
  out["device"] = dev.is_cuda() ? "cuda" : "cpu";
  out["dtype"] = dtype;
  out["timing"] = fmt::format("median of {} runs after one warm-up; tokens = batch x context", o.iters);
  const double bw = bench::copy_bandwidth_gbs(dev, o.iters) * 1e9, peak = bench::matmul_flops(dev, model->dtype(), o.iters);
  out["copy_bandwidth_gbs"] = bw / 1e9;
  out["matmul_tflops"] = peak / 1e12;
  const int64_t elem = dtype == "float32" ? 4 : 2;
  const double B = double(o.batch), C = double(o.context), tokens = B * C;
  // forward calls, and the cache they read: chunk i reads what the i chunks before it stored
  const double forwards = mode == "prefill" ? 1.0 : std::ceil(C / double(o.chunk));
  double base = 0;
  for (const auto& [name, spec] : methods) {
    (void)run_once(mode, spec, o, *model, ids);  // warm-up: allocator, kernels, lazy init
    std::vector<Run> runs;
    for (int i = 0; i < o.iters; ++i) runs.push_back(run_once(mode, spec, o, *model, ids));
    std::sort(runs.begin(), runs.end(), [](const Run& a, const Run& b) { return a.seconds < b.seconds; });
    const Run& r = runs[runs.size() / 2];
    nlohmann::json row;
    row["method"] = name;
    row["label"] = method_label(spec);
    row["seconds"] = r.seconds;
    row["tokens_per_s"] = double(o.batch * o.context) / r.seconds;
    if (name == "fp16") base = row["tokens_per_s"].get<double>();
    row["ratio_vs_fp16"] = row["tokens_per_s"].get<double>() / base;
    row["attention_impl"] = r.paths.attention_impl();
    row["kernel_path"] = r.paths.kernel_path();
    row["kv_bytes"] = r.kv_bytes;
    const double kv_read = mode == "prefill" ? 0.0 : double(r.kv_bytes) * (forwards - 1) / 2;
    bench::write_roofline(row, bench::roofline(s, elem, tokens, forwards, kv_read, B * C * (C + 1) / 2, bw, peak), tokens,
                          row["tokens_per_s"].get<double>());
    out["rows"].push_back(row);
  }
  return out;
}

std::string format_throughput_bench(const nlohmann::json& r) {
  std::string s = fmt::format("{} bench: {} batch {} context {}{} on {} ({}; copy bandwidth {:.0f} GB/s, matmul {:.1f} TFLOP/s)\n",
                              r["mode"].get<std::string>(), r["shape"].get<std::string>(), r["batch"].get<int64_t>(),
                              r["context"].get<int64_t>(),
                              r.contains("chunk") ? fmt::format(" chunk {}", r["chunk"].get<int64_t>()) : "",
                              r["device"].get<std::string>(), r["dtype"].get<std::string>(),
                              r["copy_bandwidth_gbs"].get<double>(), r["matmul_tflops"].get<double>());
  s += fmt::format("{:<20} {:>10} {:>12} {:>8} {:>12} {:>12} {:>6} {:<9}  {}\n", "method", "seconds", "tok/s", "x fp16", "KV MB",
                   "roof tok/s", "%roof", "bound", "kernel_path (attention_impl)");
  for (const auto& row : r["rows"])
    s += fmt::format("{:<20} {:>10.4f} {:>12.1f} {:>8.2f} {:>12.2f} {:>12.0f} {:>6.2f} {:<9}  {} ({})\n",
                     row["method"].get<std::string>(), row["seconds"].get<double>(), row["tokens_per_s"].get<double>(),
                     row["ratio_vs_fp16"].get<double>(), row["kv_bytes"].get<int64_t>() / 1048576.0,
                     row["roofline_tok_s"].get<double>(), row["roofline_fraction"].get<double>(),
                     row["roofline_bound"].get<std::string>(), row["kernel_path"].get<std::string>(),
                     row["attention_impl"].get<std::string>());
  return s;
}

}  // namespace kvx
