// Which attention path each method's policy takes (docs/methods/README.md: kernel_path), the
// `kernel` request and its refusals, and the paths against each other: on the CPU a policy with a
// fused kernel attends exactly as the kernels' CPU reference over its storage; on CUDA (skipped
// without it) the fused path of every wired method gives the dequantize-then-attend path's
// outputs, call by call through prefill chunks, flushes and decode steps, and the same perplexity
// of small-code-llama within 0.1%.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/kernels/packed_kv.h"
#include "core/model/model.h"
#include "experiments/perplexity.h"
#include "core/tokenizer/tokenizer.h"
#include "experiments/text_windows.h"
#include "quantizers/registry.h"
#include "tests/model/fixtures.h"

namespace {

using json = nlohmann::json;

kvx::ModelInfo info(int64_t L, int64_t Hq, int64_t Hkv, at::Device dev, at::ScalarType dt) {
  kvx::ModelInfo m;
  m.n_layers = L;
  m.n_heads = Hq;
  m.n_kv_heads = Hkv;
  m.head_dim = 128;
  m.device = dev;
  m.dtype = dt;
  return m;
}

json method(const std::string& shorthand, const std::string& kernel = "auto") {
  json m = kvx::parse_method_shorthand(shorthand);
  if (kernel != "auto") m["kernel"] = kernel;
  return kvx::resolve_method(m);
}

kvx::AttentionOptions scale() {
  kvx::AttentionOptions o;
  o.scale = 1.0 / std::sqrt(128.0);
  return o;
}

// Feeds one layer chunks of the given sizes (random q, k, v from `seed`); returns the outputs.
std::vector<at::Tensor> run(kvx::KVCachePolicy& p, const kvx::ModelInfo& m, const std::vector<int64_t>& chunks, int seed) {
  at::manual_seed(seed);
  p.reset(m, 2);
  std::vector<at::Tensor> outs;
  int64_t pos = 0;
  const auto opt = at::TensorOptions().device(m.device).dtype(m.dtype);
  for (int64_t n : chunks) {
    auto q = at::randn({2, m.n_heads, n, 128}, opt), k = at::randn({2, m.n_kv_heads, n, 128}, opt), v = at::randn_like(k);
    outs.push_back(p.attend(0, q, k, v, {pos, n, nullptr}, scale()).to(at::kFloat).cpu());
    p.end_step({pos, n, nullptr});
    pos += n;
  }
  return outs;
}

}  // namespace

TEST(FusedDispatch, PathsOnCpu) {
  const auto m = info(1, 4, 2, at::kCPU, at::kFloat);
  const std::vector<int64_t> chunks = {40, 32, 1, 1};
  struct Case {
    std::string method, path;
  } cases[] = {{"fp16", "cpu_reference"},
               {"kvq:k4v4", "cpu_reference"},
               {"kvq:k2cv2:r64", "cpu_reference"},
               {"selective_int8", "cpu_reference"},
               {"kvq:k3v3", "dequant_then_attend"},  // 3-bit codes have no kernel layout
               {"sink_window", "dequant_then_attend"}};
  for (const auto& c : cases) {
    auto p = kvx::make_policy(method(c.method));
    run(*p, m, chunks, 1);
    EXPECT_EQ(p->paths().kernel_path(), c.path) << c.method;
    EXPECT_EQ(p->paths().chunk_only_calls, 1) << c.method;  // the first chunk had nothing cached
  }
  auto bf16_stats = kvx::make_policy(kvx::resolve_method(
      json{{"key", {{"type", "kvq"}, {"compute_dtype", "bfloat16"}}}, {"value", {{"type", "kvq"}, {"compute_dtype", "bfloat16"}}}}));
  run(*bf16_stats, m, chunks, 1);
  EXPECT_EQ(bf16_stats->paths().kernel_path(), "dequant_then_attend");
}

// `kernel: fused` is refused where it cannot run, with the reason; never a silent fallback.
TEST(FusedDispatch, FusedRequestRefusals) {
  try {
    kvx::resolve_method(json{{"policy", {{"type", "h2o"}}}, {"kernel", "fused"}});
    ADD_FAILURE() << "kernel: fused accepted for a method without a kernel";
  } catch (const kvx::ParamError& e) {
    ASSERT_FALSE(e.path.empty());
    EXPECT_EQ(e.path[0], "kernel");
    EXPECT_NE(std::string(e.what()).find("has no fused kernel"), std::string::npos) << e.what();
  }
  EXPECT_THROW(kvx::resolve_method(json{{"key", "none"}, {"value", "none"}, {"kernel", "fast"}}), kvx::ParamError);
  for (const char* m : {"kvq:k4v4", "selective_int8", "fp16"}) {
    auto p = kvx::make_policy(method(m, "fused"));
    try {
      p->reset(info(1, 4, 2, at::kCPU, at::kFloat), 1);
      ADD_FAILURE() << m << ": kernel: fused accepted on the CPU";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("run on CUDA"), std::string::npos) << e.what();
    }
  }
  auto k3 = kvx::make_policy(method("kvq:k3v3", "fused"));
  try {
    k3->reset(info(1, 4, 2, at::kCPU, at::kFloat), 1);
    ADD_FAILURE() << "3-bit kvq accepted kernel: fused";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("not stored in the fused kernels' layout"), std::string::npos) << e.what();
  }
  // the request enters the label and the job key; auto stays implicit
  EXPECT_EQ(kvx::method_label(method("kvq:k4v4", "fused")), kvx::method_label(method("kvq:k4v4")) + " kernel=fused");
  EXPECT_FALSE(method("kvq:k4v4", "auto").contains("kernel"));
}

// On the CPU, a prefill chunk then a decode step: the policy's output is the kernels' CPU reference
// over what the method stores (the first chunk quantized whole, the new token in full precision).
TEST(FusedDispatch, CpuPathIsTheKernelsReference) {
  const auto m = info(1, 8, 2, at::kCPU, at::kFloat);
  for (auto [shorthand, pc] : std::vector<std::pair<std::string, bool>>{{"kvq:k4v2", false}, {"kvq:k2cv4:g32", true}}) {
    at::manual_seed(3);
    auto k0 = at::randn({1, 2, 64, 128}), v0 = at::randn_like(k0), q1 = at::randn({1, 8, 1, 128});
    auto k1 = at::randn({1, 2, 1, 128}), v1 = at::randn_like(k1);
    auto p = kvx::make_policy(method(shorthand));
    p->reset(m, 1);
    p->attend(0, at::randn({1, 8, 64, 128}), k0, v0, {0, 64, nullptr}, scale());
    auto out = p->attend(0, q1, k1, v1, {64, 1, nullptr}, scale()).view({1, 1, 8, 128}).transpose(1, 2);
    const auto bits = kvx::resolve_method(kvx::parse_method_shorthand(shorthand));
    auto K = kvx::kernels::ref::quantize_pack(k0, bits["key"]["bits"].get<int>(), int(bits["key"]["group"].get<int64_t>()), pc, true);
    auto V = kvx::kernels::ref::quantize_pack(v0, bits["value"]["bits"].get<int>(), int(bits["value"]["group"].get<int64_t>()), false, false);
    auto want = kvx::kernels::ref::packed_attention(q1, &K, &V, {}, {k1, v1}, scale().scale);
    EXPECT_LT((out - want).abs().max().item<float>(), 2e-6) << shorthand;
  }
}

// Re-encoding decoded groups gives back their codes (why requantize_all on packed storage
// re-encodes only what changes): per-token and per-channel groups, every bit width.
TEST(FusedDispatch, ReencodingDecodedGroupsIsTheIdentity) {
  at::manual_seed(4);
  for (int bits : {2, 4, 8})
    for (bool pc : {false, true}) {
      auto x = at::randn({2, 3, 256, 128}) * at::linspace(0.1, 30, 128);
      auto b = kvx::kernels::ref::quantize_pack(x, bits, 64, pc, pc);
      auto again = kvx::kernels::ref::quantize_pack(kvx::kernels::ref::dequantize(b, at::kFloat), bits, 64, pc, pc);
      EXPECT_TRUE(at::equal(b.codes, again.codes)) << bits << " " << pc;
      EXPECT_TRUE(at::equal(b.scale, again.scale)) << bits << " " << pc;
      EXPECT_TRUE(at::equal(b.minv, again.minv)) << bits << " " << pc;
    }
}

#ifdef KVX_WITH_CUDA
// Every wired method: the fused path against dequantize-then-attend on the same inputs, call by
// call: prefill chunks (the first with nothing cached), chunks over a packed history, residual
// flushes, leftovers of unfinished tiles and groups, sinks, decode steps.
TEST(FusedDispatchCuda, FusedEqualsDequantThenAttend) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const auto m = info(1, 8, 2, at::kCUDA, at::kBFloat16);
  std::vector<int64_t> chunks = {100, 32, 32, 32, 32, 32, 7};
  for (int i = 0; i < 140; ++i) chunks.push_back(1);
  for (const char* shorthand : {"fp16", "kvq:k4v4", "kvq:k2v2", "kvq:k4v2:g128", "kvq:k8v8:g32", "kvq:k4cv4:r64",
                                "kvq:k2cv2:r64", "kvq:k2cv2:g128:s4", "kvq:k4v4:append",
                                "selective_int8", "selective_int8:s4:w64"}) {
    auto fused = kvx::make_policy(method(shorthand));
    auto dense = kvx::make_policy(method(shorthand, "dequant_then_attend"));
    const auto a = run(*fused, m, chunks, 7), b = run(*dense, m, chunks, 7);
    float worst = 0;
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, (a[i] - b[i]).abs().max().item<float>());
    std::printf("%-22s fused vs dequant_then_attend: max |diff| %.2e over %zu calls (%s / %s)\n", shorthand, worst, a.size(),
                fused->paths().kernel_path().c_str(), fused->paths().attention_impl().c_str());
    EXPECT_LT(worst, 2e-2) << shorthand;  // bf16 outputs of unit-variance values
    EXPECT_EQ(fused->paths().kernel_path(), "fused") << shorthand;
    if (std::string(shorthand) != "fp16") EXPECT_EQ(dense->paths().kernel_path(), "dequant_then_attend") << shorthand;
    EXPECT_EQ(fused->memory().device_bytes(), dense->memory().device_bytes()) << shorthand;
  }
}

// The quality of a real model does not depend on the path: perplexity of small-code-llama on
// WikiText-2 through the fused kernels (float16) is as close to the method's perplexity computed in
// float32 (dequantize-then-attend) as the float16 dequantize-then-attend path is: within 0.1%, or
// within 1.5x that path's own distance where float16 itself moves the 2-bit codes further.
TEST(FusedDispatchCuda, SmallCodeLlamaPerplexityMatches) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const std::string dir = kvx::test::model_dir("small-code-llama");
  auto model = kvx::load_model(dir, "cuda", "float16");
  auto exact = kvx::load_model(dir, "cuda", "float32");
  const std::string text = kvx::test::read_text(kvx::test::source_dir() + "/data/wikitext-2/test.txt").substr(0, 20000);
  const std::vector<int32_t> ids = kvx::load_tokenizer_cached(dir)->encode(text, false);
  for (int64_t chunk : {32, 1})
    for (const char* shorthand : {"fp16", "kvq:k4v4", "kvq:k2v2", "kvq:k4cv4:r64", "kvq:k2cv2:r64", "selective_int8"}) {
      kvx::PerplexityOptions o;
      o.seq_len = chunk == 1 ? 384 : 512;
      o.chunk = chunk;
      o.max_windows = chunk == 1 ? 2 : 6;
      auto f = kvx::perplexity_over_tokens(*model, ids, o, method(shorthand), nullptr);
      auto d = kvx::perplexity_over_tokens(*model, ids, o, method(shorthand, "dequant_then_attend"), nullptr);
      auto e = kvx::perplexity_over_tokens(*exact, ids, o, method(shorthand, "dequant_then_attend"), nullptr);
      const double rel = std::abs(f["ppl"].get<double>() / e["ppl"].get<double>() - 1.0);
      std::printf("%-16s chunk %3ld: ppl fused fp16 %.4f (%s), dequant_then_attend fp16 %.4f (rel %.1e), fp32 %.4f: fused rel %.1e\n",
                  shorthand, long(chunk), f["ppl"].get<double>(), f["kernel_path"].get<std::string>().c_str(),
                  d["ppl"].get<double>(), std::abs(d["ppl"].get<double>() / e["ppl"].get<double>() - 1.0),
                  e["ppl"].get<double>(), rel);
      EXPECT_LT(rel, std::max(1e-3, 1.5 * std::abs(d["ppl"].get<double>() / e["ppl"].get<double>() - 1.0)))
          << shorthand << " chunk " << chunk;
      EXPECT_EQ(f["kernel_path"], "fused") << shorthand;
    }
}
#endif
