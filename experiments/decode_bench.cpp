#include "experiments/decode_bench.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <regex>

#include "core/common/error.h"
#include "core/kernels/higgs_kv.h"
#include "core/kernels/int8_kv.h"
#include "core/kernels/packed_kv.h"
#include "experiments/bench_common.h"

#if defined(KVX_WITH_CUDA) && __has_include(<ATen/cuda/CUDAGraph.h>) && __has_include(<cuda_runtime_api.h>)
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

namespace {

constexpr int kAttnInner = 10;  // back-to-back calls per timed attention sample

using bench::sync;

// dense: fp16 baselines; packed: kvq KIVI layout; int8: selective int8 (sinks + window fp16);
// higgs: HIGGS codes per (b, KV head, token) row of head_dim values, dequantized then attended.
enum class Kind { Dense, Packed, Int8, Higgs };

struct Method {
  std::string label;
  Kind kind = Kind::Dense;
  int kbits = 16, vbits = 16, group = 64;  // packed
  int64_t sinks = 0, window = 0;           // int8
  int hd = 2, hn = 256, hg = 128;          // higgs: grid dim, grid size, Hadamard group
};

Method parse_bench_method(const std::string& s) {
  std::smatch m;
  static const std::regex kvq(R"(kvq:k(\d)v(\d)(?::g(\d+))?)");
  static const std::regex int8(R"(int8(?::s(\d+)w(\d+))?)");
  static const std::regex higgs(R"(higgs(?::d(\d+)n(\d+))?(?::g(\d+))?)");
  Method r;
  r.label = s;
  if (std::regex_match(s, m, kvq)) {
    r.kind = Kind::Packed;
    r.kbits = std::stoi(m[1]);
    r.vbits = std::stoi(m[2]);
    r.group = m[3].matched ? std::stoi(m[3]) : 64;
    for (int b : {r.kbits, r.vbits})
      if (b != 2 && b != 4 && b != 8) throw error("bench method '{}': bits must be 2, 4 or 8", s);
  } else if (std::regex_match(s, m, int8)) {
    r.kind = Kind::Int8;
    r.sinks = m[1].matched ? std::stoll(m[1]) : 16;  // ALGORITHMS.md 6.2 defaults
    r.window = m[2].matched ? std::stoll(m[2]) : 32;
  } else if (std::regex_match(s, m, higgs)) {
    r.kind = Kind::Higgs;
    if (m[1].matched) {
      r.hd = std::stoi(m[1]);
      r.hn = std::stoi(m[2]);
    }
    if (m[3].matched) r.hg = std::stoi(m[3]);
    if (r.hd < 1 || r.hn < 2 || (r.hn & (r.hn - 1)) != 0 || r.hn > 65536 || r.hg < 1 || (r.hg & (r.hg - 1)) != 0)
      throw error("bench method '{}': higgs needs d >= 1, n a power of two in [2, 65536], g a power of two", s);
  } else {
    throw error("bench method '{}': expected kvq:k<bits>v<bits>[:g<group>], int8[:s<sinks>w<window>] or "
                "higgs[:d<dim>n<points>][:g<group>]", s);
  }
  return r;
}

// Median wall time in microseconds of fn over iters samples (after two warm-ups); each sample runs
// fn `inner` times back to back and one synchronization, so that short kernels are timed without
// the host's synchronize round trip (the way they run inside a decode step).
template <typename F>
double time_us(const at::Device& dev, int iters, F&& fn, int inner = 1) {
  fn();
  fn();
  sync(dev);
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    auto a = std::chrono::steady_clock::now();
    for (int j = 0; j < inner; ++j) fn();
    sync(dev);
    t.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count() / inner);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Device time of fn: `inner` calls captured once into a CUDA graph and replayed (no host
// dispatch in the measurement, as under graph-captured decoding). Negative when capture fails.
template <typename F>
double graph_time_us(const at::Device& dev, int iters, F&& fn, int inner) {
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
  return -1;
#endif
}

// graph_time_us where capture works, else time_us.
template <typename F>
double device_time_us(const at::Device& dev, int iters, F&& fn, int inner) {
  const double g = graph_time_us(dev, iters, fn, inner);
  return g > 0 ? g : time_us(dev, iters, fn, inner);
}

// One layer's cache for a method: packed body + fp16 residual, a selective-int8 cache, HIGGS
// codes, or a dense fp16 cache.
struct LayerCache {
  kernels::PackedBlock k, v;
  at::Tensor k_fp, v_fp;  // [B, Hkv, T or R, D]
  kernels::SelectiveInt8Cache i8;
  kernels::HiggsView hk, hv;  // rows = (b, KV head, token), C = head_dim
  int64_t higgs_heads = 0;
  int64_t bytes() const {
    auto hb = [](const kernels::HiggsView& h) { return kernels::tensor_bytes(h.packed) + kernels::tensor_bytes(h.scales); };
    return k.bytes() + v.bytes() + kernels::tensor_bytes(k_fp) + kernels::tensor_bytes(v_fp) + i8.bytes() + hb(hk) + hb(hv);
  }
};

// Random HIGGS codes of [B, Hkv, T, D] (the kernels' cost does not depend on the values).
kernels::HiggsView random_higgs(const Method& m, int64_t rows, int64_t D, const at::Device& dev) {
  kernels::HiggsView h;
  h.rows = rows;
  h.C = D;
  h.g = std::min<int64_t>(m.hg, D);
  h.d = m.hd;
  for (h.bits = 0; (1 << h.bits) < m.hn;) ++h.bits;
  const int64_t groups = (D + h.g - 1) / h.g, vecs = (h.g + h.d - 1) / h.d;
  auto opt = at::TensorOptions().device(dev);
  h.packed = at::randint(0, 256, {(rows * groups * vecs * h.bits + 7) / 8}, opt.dtype(at::kByte));
  h.scales = (at::rand({rows, groups}, opt) + 0.5).to(at::kHalf);
  h.points = at::randn({m.hn, m.hd}, opt);
  return h;
}

LayerCache make_cache(const Method& m, const ModelShape& s, int64_t B, int64_t T, int64_t R, const at::Device& dev) {
  auto opt = at::TensorOptions().device(dev).dtype(at::kBFloat16);
  LayerCache c;
  if (m.kind == Kind::Dense) {
    c.k_fp = at::randn({B, s.kv_heads, T, s.head_dim}, opt);
    c.v_fp = at::randn({B, s.kv_heads, T, s.head_dim}, opt);
    return c;
  }
  if (m.kind == Kind::Int8) {
    const int64_t S = std::min(m.sinks, T), W = std::min(m.window, T - S), N = T - S - W;
    auto fp = [&](int64_t n) { return at::randn({B, s.kv_heads, n, s.head_dim}, opt); };
    c.i8.k_sink = fp(S);
    c.i8.v_sink = fp(S);
    c.i8.k_body = kvx::int8_quantize(fp(N));
    c.i8.v_body = kvx::int8_quantize(fp(N));
    c.i8.k_win = fp(W);
    c.i8.v_win = fp(W);
    return c;
  }
  if (m.kind == Kind::Higgs) {
    c.higgs_heads = s.kv_heads;
    c.hk = random_higgs(m, B * s.kv_heads * T, s.head_dim, dev);
    c.hv = random_higgs(m, B * s.kv_heads * T, s.head_dim, dev);
    return c;
  }
  const int64_t Tq = (T - R) / m.group * m.group;
  c.k = kernels::quantize_pack(at::randn({B, s.kv_heads, Tq, s.head_dim}, opt), m.kbits, m.group, true);
  c.v = kernels::quantize_pack(at::randn({B, s.kv_heads, Tq, s.head_dim}, opt), m.vbits, m.group, false);
  c.k_fp = at::randn({B, s.kv_heads, T - Tq, s.head_dim}, opt);
  c.v_fp = at::randn({B, s.kv_heads, T - Tq, s.head_dim}, opt);
  return c;
}

// fp16 baseline attention through Torch: GQA decode as [B, Hkv, rep, D] queries over
// [B, Hkv, T, D] keys (no causal mask needed for the newest token).
at::Tensor torch_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  const int64_t B = q.size(0), Hq = q.size(1), D = q.size(2), Hkv = k.size(1);
  auto qg = q.view({B, Hkv, Hq / Hkv, D});
#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(qg, k, v, {}, 0.0, false, scale).reshape({B, Hq, D});
#else
  auto p = at::softmax(at::matmul(qg, k.transpose(2, 3)).mul(scale).to(at::kFloat), -1).to(q.scalar_type());
  return at::matmul(p, v).reshape({B, Hq, D});
#endif
}

at::Tensor dense_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale, bool fused) {
#ifdef KVX_WITH_CUDA
  if (fused && q.is_cuda()) return kernels::cuda::decode_attention_dense(q, k, v, scale);
#endif
  return torch_attention(q, k, v, scale);
}

at::Tensor attend(const Method& m, const at::Tensor& q, const LayerCache& c, double scale, bool fused_dense) {
  switch (m.kind) {
    case Kind::Dense: return dense_attention(q, c.k_fp, c.v_fp, scale, fused_dense);
    case Kind::Packed: return kernels::decode_attention(q, c.k, c.v, c.k_fp, c.v_fp, scale);
    case Kind::Int8: return kernels::int8_decode_attention(q, c.i8, scale);
    case Kind::Higgs: {
      const std::vector<int64_t> shape{q.size(0), c.higgs_heads, -1, q.size(2)};
      auto k = kernels::higgs_dequantize(c.hk, q.scalar_type()).view(shape);
      auto v = kernels::higgs_dequantize(c.hv, q.scalar_type()).view(shape);
      return dense_attention(q, k, v, scale, true);
    }
  }
  throw error("bench: unknown method kind");
}

const char* kernel_path(const Method& m, const at::Tensor& q, bool fused_dense) {
  switch (m.kind) {
    case Kind::Dense: return fused_dense && q.is_cuda() ? "fused" : "torch";
    case Kind::Higgs: return q.is_cuda() ? "dequant_then_attend" : "cpu";
    default: return kernels::decode_attention_path(q);
  }
}

// One decode step through a random-weight decoder layer stack at the model's shape
// (bench_common.h): {eager µs, CUDA-graph µs (negative when capture fails)}. The graph replay is
// what graph-captured serving runs; eager adds about 500 launches of host dispatch, which on a busy
// host varied the step by a third between runs of the same build.
std::pair<double, double> decode_step_us(const Method& m, const ModelShape& s, const bench::RandomWeights& w,
                                         std::vector<LayerCache>& caches, int64_t B, const at::Device& dev, int iters,
                                         bool fused_dense) {
  const double scale = 1.0 / std::sqrt(double(s.head_dim));
  auto x0 = at::randn({B, s.hidden}, at::TensorOptions().device(dev).dtype(at::kBFloat16));
  const int64_t qd = s.heads * s.head_dim;
  auto step = [&] {
    auto x = x0;
    for (int64_t l = 0; l < s.layers; ++l) {
      auto qkv = at::matmul(bench::rms_norm(x, w.norm), w.qkv);
      auto q = qkv.narrow(1, 0, qd).view({B, s.heads, s.head_dim});
      auto a = attend(m, q, caches[l], scale, fused_dense).to(x.scalar_type()).reshape({B, qd});
      x = x + at::matmul(a, w.o);
      x = x + bench::mlp(bench::rms_norm(x, w.norm), w, s);
    }
    (void)at::matmul(x, w.lm_head).argmax(-1);
  };
  return {time_us(dev, iters, step), graph_time_us(dev, iters, step, 1)};
}

}  // namespace

nlohmann::json run_decode_bench(const DecodeBenchOptions& opt) {
  const ModelShape s = model_shape(opt.shape);
  if (opt.device != "cpu" && !at::hasCUDA()) throw error("bench decode: no CUDA device (use --device cpu for a small CPU run)");
  const at::Device dev(opt.device == "cpu" ? "cpu" : "cuda");
  const int64_t B = opt.batch, T = opt.context;
  const double scale = 1.0 / std::sqrt(double(s.head_dim));
  auto bopt = at::TensorOptions().device(dev).dtype(at::kBFloat16);

  nlohmann::json out;
  out["shape"] = s.name;
  out["context"] = T;
  out["batch"] = B;
  out["device"] = dev.is_cuda() ? "cuda" : "cpu";
  out["attn_timing"] = fmt::format(
      "attn_us: median of {} samples of a CUDA graph replaying {} calls (device time; eager where capture fails, "
      "see rows' attn_timing); attn_eager_us: {} back-to-back eager calls and one sync",
      opt.iters, kAttnInner, kAttnInner);
  out["decode_timing"] = fmt::format(
      "decode_step_us: median of {} replays of one decode step captured as a CUDA graph (eager where capture "
      "fails, see rows' decode_timing), plus the amortized append; decode_step_eager_us: the step launched eagerly",
      std::max(3, opt.iters / 4));
  {  // copy bandwidth of the device: read + write bytes per second (2 GiB buffers; 64 MiB on CPU)
    auto a = at::empty({int64_t(1) << (dev.is_cuda() ? 29 : 24)}, bopt.dtype(at::kFloat)), b = at::empty_like(a);
    double us = time_us(dev, opt.iters, [&] { b.copy_(a); }, 4);
    out["copy_bandwidth_gbs"] = 2.0 * a.numel() * 4 / us / 1e3;
  }
  auto q = at::randn({B, s.heads, s.head_dim}, bopt);

  std::vector<Method> methods(2);
  methods[0].label = "fp16-sdpa";
  methods[1].label = "fp16-fused";
  for (const auto& m : opt.methods) methods.push_back(parse_bench_method(m));
  bench::RandomWeights w;
  if (opt.end_to_end) w = bench::random_weights(s, bopt);
  double base_attn = 0, base_eager = 0, base_step = 0;
  for (const auto& m : methods) {
    const bool fused_dense = m.label == "fp16-fused";
    nlohmann::json row;
    row["method"] = m.label;
    LayerCache c = make_cache(m, s, B, T, opt.residual, dev);
    double us = time_us(dev, opt.iters, [&] { (void)attend(m, q, c, scale, fused_dense); }, kAttnInner);
    row["attn_eager_us"] = us;  // host dispatch included (each call launches its kernels)
    const double gus = graph_time_us(dev, opt.iters, [&] { (void)attend(m, q, c, scale, fused_dense); }, kAttnInner);
    if (gus > 0) {
      row["attn_graph_us"] = gus;
      us = gus;
    }
    row["attn_timing"] = gus > 0 ? "cuda-graph" : "eager";
    row["attn_us"] = us;
    row["kv_bytes_per_layer"] = c.bytes();
    row["bandwidth_gbs"] = double(c.bytes()) / us / 1e3;
    row["bandwidth_frac_of_copy"] = row["bandwidth_gbs"].get<double>() / out["copy_bandwidth_gbs"].get<double>();
    row["kernel_path"] = kernel_path(m, q, fused_dense);
    if (m.label == "fp16-sdpa") {
      base_attn = us;
      base_eager = row["attn_eager_us"].get<double>();
    }
    row["attn_speedup_vs_sdpa"] = base_attn / us;
    row["attn_eager_speedup_vs_sdpa"] = base_eager / row["attn_eager_us"].get<double>();
    if (m.kind == Kind::Packed) {  // appending: quantize one group of new tokens, amortized per token
      auto fresh = at::randn({B, s.kv_heads, m.group, s.head_dim}, bopt);
      double qus = device_time_us(
          dev, opt.iters,
          [&] {
            (void)kernels::quantize_pack(fresh, m.kbits, m.group, true);
            (void)kernels::quantize_pack(fresh, m.vbits, m.group, false);
          },
          kAttnInner);
      row["append_us_per_token_per_layer"] = qus / m.group;
    } else if (m.kind == Kind::Int8) {  // each step one token leaves the window for the int8 body
      auto fresh = at::randn({B, s.kv_heads, 1, s.head_dim}, bopt);
      row["append_us_per_token_per_layer"] = device_time_us(
          dev, opt.iters,
          [&] {
            (void)kvx::int8_quantize(fresh);
            (void)kvx::int8_quantize(fresh);
          },
          kAttnInner);
    }  // higgs: quantization runs on the CPU (core/higgs), not timed here
    if (opt.end_to_end) {
      row["kv_bytes_total"] = c.bytes() * s.layers;  // before `c` moves into the layer list
      std::vector<LayerCache> caches;
      caches.push_back(std::move(c));
      for (int64_t l = 1; l < s.layers; ++l) caches.push_back(make_cache(m, s, B, T, opt.residual, dev));
      const auto [eager, graph] = decode_step_us(m, s, w, caches, B, dev, std::max(3, opt.iters / 4), fused_dense);
      // amortized flush cost
      const double append = row.contains("append_us_per_token_per_layer")
                                ? row["append_us_per_token_per_layer"].get<double>() * s.layers
                                : 0.0;
      const double step = (graph > 0 ? graph : eager) + append;
      row["decode_timing"] = graph > 0 ? "cuda-graph" : "eager";
      row["decode_step_eager_us"] = eager + append;
      row["decode_step_us"] = step;
      row["decode_tok_s"] = double(B) / step * 1e6;
      if (m.label == "fp16-sdpa") base_step = step;
      row["decode_speedup_vs_sdpa"] = base_step / step;
      if (row.contains("append_us_per_token_per_layer"))
        row["append_frac_of_step"] = row["append_us_per_token_per_layer"].get<double>() * s.layers / step;
    }
    out["rows"].push_back(row);
    if (dev.is_cuda()) sync(dev);
  }
  return out;
}

std::string format_decode_bench(const nlohmann::json& r) {
  std::string s = fmt::format("decode bench: {} batch {} context {} on {} (copy bandwidth {:.0f} GB/s)\n",
                              r["shape"].get<std::string>(), r["batch"].get<int64_t>(), r["context"].get<int64_t>(),
                              r["device"].get<std::string>(), r["copy_bandwidth_gbs"].get<double>());
  s += fmt::format("{:<12} {:>10} {:>9} {:>8} {:>8} {:>10} {:>12} {:>10} {:>9} {:>10}\n", "method", "attn_us", "GB/s",
                   "%copy", "x sdpa", "eager_us", "KV MB/layer", "tok/s", "x sdpa", "append%");
  for (const auto& row : r["rows"]) {
    auto num = [&](const char* k, const char* f) {
      return row.contains(k) ? fmt::format(fmt::runtime(f), row[k].get<double>()) : std::string("-");
    };
    s += fmt::format("{:<12} {:>10} {:>9} {:>8} {:>8} {:>10} {:>12.1f} {:>10} {:>9} {:>10}\n", row["method"].get<std::string>(),
                     num("attn_us", "{:.1f}"), num("bandwidth_gbs", "{:.0f}"), num("bandwidth_frac_of_copy", "{:.2f}"),
                     num("attn_speedup_vs_sdpa", "{:.2f}"), num("attn_eager_us", "{:.1f}"),
                     row["kv_bytes_per_layer"].get<int64_t>() / 1048576.0,
                     num("decode_tok_s", "{:.1f}"), num("decode_speedup_vs_sdpa", "{:.2f}"),
                     num("append_frac_of_step", "{:.3f}"));
  }
  return s;
}

}  // namespace kvx
