#include "experiments/decode_bench.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>

#include <chrono>

#include "core/common/error.h"
#include "core/model/decode_steps.h"
#include "core/model/model.h"
#include "quantizers/registry.h"

namespace kvx {
namespace {

constexpr int kAttnInner = 10;  // back-to-back attend() calls per timed attention sample

// Attention of one layer: a one-layer cache of the method filled with `context` tokens, then
// attend() calls of one new token each (the policy's whole step: storing the token, the kernel,
// the output in the model's layout).
void time_attention(nlohmann::json& row, const nlohmann::json& method, const CausalLM& model, const DecodeBenchOptions& o,
                    const at::Device& dev) {
  const ModelInfo info = bench::bench_info(model, 1);
  auto policy = make_policy(method);
  policy->reset(info, o.batch);
  bench::fill_cache(*policy, info, o.batch, o.context, 1);
  const auto opt = at::TensorOptions().device(dev).dtype(info.dtype);
  const auto q = at::randn({o.batch, info.n_heads, 1, info.head_dim}, opt);
  const auto k = at::randn({o.batch, info.n_kv_heads, 1, info.head_dim}, opt), v = at::randn_like(k);
  AttentionOptions ao;
  ao.scale = 1.0 / std::sqrt(double(info.head_dim));
  int64_t pos = o.context;
  auto call = [&] {
    StepInfo s{pos++, 1, info.rope, {}};
    (void)policy->attend(0, q, k, v, s, ao);
  };
  const int64_t bytes = policy->memory().device_bytes();
  double us = bench::time_us(dev, o.iters, call, kAttnInner);
  row["attn_eager_us"] = us;
  const double gus = bench::graph_time_us(dev, o.iters, call, kAttnInner);
  if (gus > 0) us = gus;
  row["attn_timing"] = gus > 0 ? "cuda-graph" : "eager";
  row["attn_us"] = us;
  row["kv_bytes_per_layer"] = bytes;
  row["bandwidth_gbs"] = double(bytes) / us / 1e3;
  row["kernel_path"] = policy->paths().kernel_path();
  row["attention_impl"] = policy->paths().attention_impl();
}

// Whole decode steps through the model: a full cache filled with `context` tokens, then `steps`
// greedy steps fed back on the device (no host round trip per step), one synchronization at the end.
void time_decode(nlohmann::json& row, const nlohmann::json& method, CausalLM& model, const DecodeBenchOptions& o,
                 const at::Device& dev) {
  const ModelInfo info = model.info();
  auto policy = make_policy(method);
  policy->reset(info, o.batch);
  bench::fill_cache(*policy, info, o.batch, o.context, info.n_layers);
  at::Tensor ids = at::randint(0, model.config().vocab_size, {o.batch, 1}, at::TensorOptions().device(dev).dtype(at::kLong));
  int64_t pos = o.context;
  DecodeSteps steps(model, *policy, o.decode == "auto" ? default_step_mode(model) : parse_step_mode(o.decode));
  auto step = [&] { ids = steps.forward(ids, pos++).select(1, -1).argmax(-1, true); };
  step();
  step();
  bench::sync(dev);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < o.steps; ++i) step();
  bench::sync(dev);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  row["decode_step_us"] = s / double(o.steps) * 1e6;
  row["decode_tok_s"] = double(o.batch * o.steps) / s;
  row["kv_bytes_total"] = policy->memory().device_bytes();
  row["decode_kernel_path"] = policy->paths().kernel_path();
  const DecodeSteps::Stats& st = steps.stats();
  row["decode_steps"] = {{"mode", step_mode_name(steps.mode())}, {"plain", st.plain}, {"eager", st.eager}, {"runs", st.captures}};
}

}  // namespace

nlohmann::json run_decode_bench(const DecodeBenchOptions& o) {
  if (o.context < 1 || o.batch < 1 || o.iters < 1 || o.steps < 1)
    throw error("bench decode: context, batch, iters and steps must be positive");
  const ModelShape s = model_shape(o.shape);
  if (o.device != "cpu" && !at::hasCUDA()) throw error("bench decode: no CUDA device (use --device cpu for a small CPU run)");
  const std::string dtype = o.dtype.empty() ? (o.device == "cpu" ? "float32" : "bfloat16") : o.dtype;
  c10::InferenceMode guard;
  auto model = random_llama(shape_config(s), o.device == "cpu" ? "cpu" : "cuda", dtype);
  const at::Device dev = model->device();

  std::vector<std::pair<std::string, nlohmann::json>> methods = {{"fp16", bench::bench_method("fp16")}};
  for (const auto& m : o.methods) methods.emplace_back(m, bench::bench_method(m));

  nlohmann::json out;
  out["shape"] = s.name;
  out["context"] = o.context;
  out["batch"] = o.batch;
  out["device"] = dev.is_cuda() ? "cuda" : "cpu";
  out["dtype"] = dtype;
  out["copy_bandwidth_gbs"] = bench::copy_bandwidth_gbs(dev, o.iters);
  out["attn_timing"] = fmt::format(
      "attn_us: median of {} samples of a CUDA graph replaying {} attend() calls of one layer (device time; eager where "
      "capture fails, see rows' attn_timing); attn_eager_us: {} back-to-back eager calls and one sync",
      o.iters, kAttnInner, kAttnInner);
  out["decode_timing"] = fmt::format(
      "decode_tok_s: batch x {} greedy steps through the model as the protocols run them (decode steps: {}; rows' "
      "decode_steps: plain steps replayed, eager steps, runs captured), one sync",
      o.steps, o.decode);
  const double bw = out["copy_bandwidth_gbs"].get<double>() * 1e9;
  const int64_t elem = dtype == "float32" ? 4 : 2;
  const double peak = bench::matmul_flops(dev, model->dtype(), o.iters);
  out["matmul_tflops"] = peak / 1e12;
  out["weight_bytes"] = bench::weight_bytes(s, elem);
  double base_attn = 0, base_tok = 0;
  for (const auto& [name, spec] : methods) {
    nlohmann::json row;
    row["method"] = name;
    row["label"] = method_label(spec);
    time_attention(row, spec, *model, o, dev);
    const double us = row["attn_us"].get<double>();
    if (name == "fp16") base_attn = us;
    row["bandwidth_frac_of_copy"] = row["bandwidth_gbs"].get<double>() / out["copy_bandwidth_gbs"].get<double>();
    row["attn_speedup_vs_fp16"] = base_attn / us;
    if (o.end_to_end) {
      time_decode(row, spec, *model, o, dev);
      const double tok = row["decode_tok_s"].get<double>();
      if (name == "fp16") base_tok = tok;
      row["decode_speedup_vs_fp16"] = tok / base_tok;
      // one step: every weight and the whole cache read once, each of the batch's tokens attending
      // to the context
      const double B = double(o.batch);
      bench::write_roofline(row, bench::roofline(s, elem, B, 1, row["kv_bytes_total"].get<double>(), B * double(o.context), bw, peak),
                            B, tok);
    }
    out["rows"].push_back(row);
    bench::sync(dev);
  }
  return out;
}

std::string format_decode_bench(const nlohmann::json& r) {
  std::string s = fmt::format("decode bench: {} batch {} context {} on {} {} (copy bandwidth {:.0f} GB/s, matmul {:.1f} TFLOP/s)\n",
                              r["shape"].get<std::string>(), r["batch"].get<int64_t>(), r["context"].get<int64_t>(),
                              r["device"].get<std::string>(), r["dtype"].get<std::string>(), r["copy_bandwidth_gbs"].get<double>(),
                              r["matmul_tflops"].get<double>());
  s += fmt::format("{:<16} {:>9} {:>7} {:>6} {:>7} {:>11} {:>10} {:>7} {:>10} {:>6}  {}\n", "method", "attn_us", "GB/s",
                   "%copy", "x fp16", "KV MB/layer", "tok/s", "x fp16", "roof tok/s", "%roof", "kernel_path / label");
  for (const auto& row : r["rows"]) {
    auto num = [&](const char* k, const char* f) {
      return row.contains(k) ? fmt::format(fmt::runtime(f), row[k].get<double>()) : std::string("-");
    };
    s += fmt::format("{:<16} {:>9} {:>7} {:>6} {:>7} {:>11.1f} {:>10} {:>7} {:>10} {:>6}  {} / {}\n",
                     row["method"].get<std::string>(), num("attn_us", "{:.1f}"), num("bandwidth_gbs", "{:.0f}"),
                     num("bandwidth_frac_of_copy", "{:.2f}"), num("attn_speedup_vs_fp16", "{:.2f}"),
                     row["kv_bytes_per_layer"].get<int64_t>() / 1048576.0, num("decode_tok_s", "{:.1f}"),
                     num("decode_speedup_vs_fp16", "{:.2f}"), num("roofline_tok_s", "{:.0f}"),
                     num("roofline_fraction", "{:.2f}"), row["kernel_path"].get<std::string>(),
                     row["label"].get<std::string>());
  }
  return s;
}

}  // namespace kvx
