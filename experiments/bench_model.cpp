#include "experiments/bench_model.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <fstream>

#include "core/common/error.h"
#include "core/model/model.h"
#include "quantizers/registry.h"

#if defined(KVX_WITH_CUDA) && __has_include(<ATen/cuda/CUDAGraph.h>)
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define KVX_BENCH_GRAPHS 1
#endif

namespace kvx {

ModelShape model_shape(const std::string& s) {
  static const std::vector<ModelShape> known = {
      {"llama3-8b", 32, 32, 8, 128, 4096, 14336, 128256},
      {"llama2-7b", 32, 32, 32, 128, 4096, 11008, 32000},
      {"mistral-7b", 32, 32, 8, 128, 4096, 14336, 32000},
      {"qwen2-7b", 28, 28, 4, 128, 3584, 18944, 152064},
      // CPU smoke tests of the benches (head_dim 128 so every kernel accepts it)
      {"tiny", 2, 4, 2, 128, 256, 512, 512},
  };
  for (const auto& k : known)
    if (k.name == s) return k;
  std::ifstream f(s);
  if (!f) throw error("unknown model shape '{}' (known: llama3-8b, llama2-7b, mistral-7b, qwen2-7b, tiny, or a config.json path)", s);
  nlohmann::json c;
  try {
    c = nlohmann::json::parse(f);
  } catch (const std::exception& e) {
    throw error("{}: not valid JSON: {}", s, e.what());
  }
  try {
    ModelShape m{s, c.at("num_hidden_layers"), c.at("num_attention_heads"),
                 c.value("num_key_value_heads", c.at("num_attention_heads").get<int64_t>()), 0,
                 c.at("hidden_size"), c.at("intermediate_size"), c.at("vocab_size")};
    m.head_dim = c.value("head_dim", m.hidden / m.heads);
    return m;
  } catch (const nlohmann::json::exception& e) {
    throw error("{}: missing or invalid field for a Llama-family shape: {}", s, e.what());
  }
}

ModelConfig shape_config(const ModelShape& s) {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.arch = Arch::Llama;
  c.vocab_size = s.vocab;
  c.hidden_size = s.hidden;
  c.n_layers = s.layers;
  c.n_heads = s.heads;
  c.n_kv_heads = s.kv_heads;
  c.head_dim = s.head_dim;
  c.intermediate_size = s.intermediate;
  c.max_positions = 131072;
  c.activation = "silu";
  c.rope.theta = s.name == "llama3-8b" ? 500000.0 : 10000.0;
  return c;
}

namespace bench {

void sync(const at::Device& d) {
  if (d.is_cuda()) at::zeros({1}, at::TensorOptions().device(d)).item<float>();
}

double time_us(const at::Device& dev, int iters, const std::function<void()>& fn, int inner) {
  fn();
  fn();
  sync(dev);
  std::vector<double> t;
  for (int i = 0; i < std::max(1, iters); ++i) {
    auto a = std::chrono::steady_clock::now();
    for (int j = 0; j < inner; ++j) fn();
    sync(dev);
    t.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count() / inner);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

double graph_time_us(const at::Device& dev, int iters, const std::function<void()>& fn, int inner) {
#ifdef KVX_BENCH_GRAPHS
  if (!dev.is_cuda()) return -1;
  try {
    auto stream = c10::cuda::getStreamFromPool();
    at::cuda::CUDAGraph graph;
    {
      c10::cuda::CUDAStreamGuard guard(stream);
      fn();  // warm-up on the capture stream (lazy initialization stays out of the graph)
      stream.synchronize();
      graph.capture_begin();
      for (int j = 0; j < inner; ++j) fn();
      graph.capture_end();
    }
    return time_us(dev, iters, [&] { graph.replay(); }) / inner;
  } catch (const std::exception&) {
    return -1;
  }
#else
  (void)dev, (void)iters, (void)fn, (void)inner;
  return -1;
#endif
}

double copy_bandwidth_gbs(const at::Device& dev, int iters) {
  auto a = at::empty({int64_t(1) << (dev.is_cuda() ? 29 : 24)}, at::TensorOptions().device(dev).dtype(at::kFloat));
  auto b = at::empty_like(a);
  const double us = time_us(dev, iters, [&] { b.copy_(a); }, 4);
  return 2.0 * double(a.numel()) * 4 / us / 1e3;
}

double matmul_flops(const at::Device& dev, at::ScalarType dtype, int iters) {
  const int64_t n = dev.is_cuda() ? 8192 : 1024;
  const auto opt = at::TensorOptions().device(dev).dtype(dtype);
  auto a = at::randn({n, n}, opt), b = at::randn({n, n}, opt);
  const double us = time_us(dev, std::min(iters, 5), [&] { (void)at::mm(a, b); }, dev.is_cuda() ? 4 : 1);
  return 2.0 * double(n) * double(n) * double(n) / (us * 1e-6);
}

double weight_bytes(const ModelShape& s, int64_t elem) {
  const double per_layer = double(s.hidden) * (s.heads + 2 * s.kv_heads) * s.head_dim + double(s.heads) * s.head_dim * s.hidden +
                           3.0 * s.hidden * s.intermediate + 2.0 * s.hidden;
  return (s.layers * per_layer + 2.0 * s.vocab * s.hidden + s.hidden) * double(elem);
}

Roofline roofline(const ModelShape& s, int64_t elem, double tokens, double forwards, double kv_read_bytes, double attended,
                  double copy_bytes_per_s, double flops_per_s) {
  Roofline r;
  const double matmul_weights = weight_bytes(s, elem) / double(elem) - double(s.vocab) * s.hidden;  // the embedding is a lookup
  r.bytes = forwards * weight_bytes(s, elem) + kv_read_bytes;
  r.flops = 2.0 * matmul_weights * tokens + 4.0 * double(s.layers) * s.heads * s.head_dim * attended;
  const double t_bytes = r.bytes / copy_bytes_per_s, t_flops = r.flops / flops_per_s;
  r.seconds = std::max(t_bytes, t_flops);
  r.bound = t_bytes >= t_flops ? "bandwidth" : "compute";
  return r;
}

void write_roofline(nlohmann::json& row, const Roofline& r, double tokens, double tokens_per_s) {
  const double roof = tokens / r.seconds;
  row["roofline_tok_s"] = roof;
  row["roofline_fraction"] = tokens_per_s / roof;
  row["roofline_bound"] = r.bound;
}

nlohmann::json bench_method(const std::string& shorthand) {
  return resolve_method(parse_method_shorthand(shorthand == "fp16" ? "none" : shorthand));
}

ModelInfo bench_info(const CausalLM& model, int64_t n_layers) {
  ModelInfo info = model.info();
  info.n_layers = n_layers;
  return info;
}

void fill_cache(KVCachePolicy& policy, const ModelInfo& info, int64_t batch, int64_t tokens, int64_t layers) {
  const auto opt = at::TensorOptions().device(info.device).dtype(info.dtype);
  StepInfo step;
  step.pos0 = 0;
  step.n_new = tokens;
  step.rope = info.rope;
  for (int64_t l = 0; l < layers; ++l) {
    auto k = at::randn({batch, info.n_kv_heads, tokens, info.head_dim}, opt);
    auto v = at::randn({batch, info.n_kv_heads, tokens, info.head_dim}, opt);
    policy.append(int(l), k, v, step);
  }
  policy.end_step(step);
}

}  // namespace bench
}  // namespace kvx
