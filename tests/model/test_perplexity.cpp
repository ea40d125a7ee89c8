// The perplexity protocol: chunked feeding is exact (chunk 1 == 32 == 512 through the
// full-precision cache), the scoring rule, NaN handling, and (KVX_SLOW=1) the full WikiText-2
// test perplexity against transformers' reference.json.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/common/error.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "experiments/model_cache.h"
#include "experiments/perplexity.h"
#include "experiments/protocol.h"
#include "fixtures.h"
#include "core/common/remove_tree.h"

namespace kvx {
namespace {

const nlohmann::json& none_method() {
  static const nlohmann::json m = resolve_method(parse_method_shorthand("none"));
  return m;
}

// The first ~1500 tokens of WikiText-2 test.
std::vector<int32_t> head_tokens(const std::string& model) {
  auto tok = Tokenizer::load(test::model_dir(model) + "/tokenizer.json");
  return tok.encode(test::read_text(test::wikitext_test()).substr(0, 6000), false);
}

class PerplexitySlice : public ::testing::TestWithParam<const char*> {};

TEST_P(PerplexitySlice, ChunkSizeDoesNotChangePerplexity) {
  auto model = load_model(test::model_dir(GetParam()), "cpu", "float32");
  const auto ids = head_tokens(GetParam());
  ASSERT_GE(ids.size(), 4 * 128u);
  // One 256-token window (chunk 1 is 256 forward calls; CPU CI), chunk 512 = one pass.
  PerplexityOptions o;
  o.seq_len = 256;
  o.max_windows = 1;
  double ppl[3];
  int64_t i = 0;
  for (int64_t chunk : {1, 32, 512}) {
    o.chunk = chunk;
    auto m = perplexity_over_tokens(*model, ids, o, none_method(), nullptr);
    EXPECT_EQ(m["tokens_scored"].get<int64_t>(), 255);  // position 0 has no context
    EXPECT_EQ(m["windows"].get<int64_t>(), 1);
    ppl[i++] = m["ppl"].get<double>();
  }
  EXPECT_NEAR(ppl[0] / ppl[2], 1.0, 1e-3);
  EXPECT_NEAR(ppl[1] / ppl[2], 1.0, 1e-3);
  EXPECT_GT(ppl[2], 2.0);
  EXPECT_LT(ppl[2], 500.0);

  // Several windows (short ones: CPU CI), each from a fresh cache.
  o.seq_len = 128;
  o.max_windows = 4;
  o.chunk = 32;
  auto a = perplexity_over_tokens(*model, ids, o, none_method(), nullptr);
  o.chunk = 128;
  auto b = perplexity_over_tokens(*model, ids, o, none_method(), nullptr);
  EXPECT_EQ(a["tokens_scored"].get<int64_t>(), 4 * 127);
  EXPECT_NEAR(a["ppl"].get<double>() / b["ppl"].get<double>(), 1.0, 1e-3);
  // Memory of the full-precision cache: 16 bits per value, everything retained.
  const auto info = model->info();
  EXPECT_DOUBLE_EQ(a["bpv"].get<double>(), 16.0);
  EXPECT_DOUBLE_EQ(a["compression_ratio"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(a["retained_fraction"].get<double>(), 1.0);
  EXPECT_EQ(a["kv_bytes_max"].get<int64_t>(), 2 * info.n_layers * info.n_kv_heads * info.head_dim * 128 * 2);
  // Held over time: after chunks of 32, 64, 96 and 128 tokens, i.e. 80 tokens on average.
  EXPECT_DOUBLE_EQ(a["kv_bytes_mean"].get<double>(), 2.0 * info.n_layers * info.n_kv_heads * info.head_dim * 80 * 2);
  EXPECT_EQ(a["attention_impl"], "matmul");
  EXPECT_EQ(a["kernel_path"], "cpu_reference");
}

TEST_P(PerplexitySlice, WarmupAndStrideDecideWhatIsScored) {
  auto model = load_model(test::model_dir(GetParam()), "cpu", "float32");
  const auto ids = head_tokens(GetParam());
  PerplexityOptions o;
  o.seq_len = 64;
  o.chunk = 64;
  o.max_windows = 3;
  o.warmup = 16;
  EXPECT_EQ(perplexity_over_tokens(*model, ids, o, none_method(), nullptr)["tokens_scored"].get<int64_t>(), 3 * 48);
  o.warmup = 0;
  o.stride = 16;  // overlapping: later windows score only their last 16 tokens
  EXPECT_EQ(perplexity_over_tokens(*model, ids, o, none_method(), nullptr)["tokens_scored"].get<int64_t>(),
            63 + 2 * 16);
  o.stride = 0;
  o.add_bos = true;
  o.bos_id = 0;  // window = BOS + 63 text tokens, all 63 scored
  EXPECT_EQ(perplexity_over_tokens(*model, ids, o, none_method(), nullptr)["tokens_scored"].get<int64_t>(), 3 * 63);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, PerplexitySlice, ::testing::Values("small-code-llama", "tiny-gpt2"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

TEST(PerplexityProtocol, DefaultsAndRegistration) {
  auto p = resolve_protocol({{"name", "perplexity"}});
  EXPECT_EQ(p["seq_len"], 512);
  EXPECT_EQ(p["stride"], 0);
  EXPECT_EQ(p["chunk"], 32);
  EXPECT_EQ(p["warmup"], 0);
  EXPECT_EQ(p["max_windows"], 0);
  EXPECT_EQ(p["add_bos"], false);
  EXPECT_EQ(p["dtype"], "float32");
  EXPECT_EQ(p["profile"], false);
  EXPECT_THROW(resolve_protocol({{"name", "perplexity"}, {"dtype", "int8"}}), ParamError);
}

TEST(PerplexityProtocol, ProfileSplitsPrefillFromDecodeAndLeavesPerplexityAlone) {
  auto model = load_model(test::model_dir("tiny-gpt2"), "cpu", "float32");
  const auto ids = head_tokens("tiny-gpt2");
  const auto kvq = resolve_method(parse_method_shorthand("kvq:k4v2:r16"));
  PerplexityOptions o;
  o.seq_len = 64;
  o.max_windows = 2;
  o.chunk = 16;
  const auto plain = perplexity_over_tokens(*model, ids, o, kvq, nullptr);
  EXPECT_FALSE(plain.contains("prof_prefill_s"));
  o.profile = true;
  const auto prefill = perplexity_over_tokens(*model, ids, o, kvq, nullptr);
  EXPECT_DOUBLE_EQ(prefill["ppl"].get<double>(), plain["ppl"].get<double>());
  EXPECT_GT(prefill["prof_prefill_s"].get<double>(), 0.0);
  EXPECT_EQ(prefill["prof_decode_s"].get<double>(), 0.0);  // every call fed 16 tokens
  // The parts add up to the caller's time, and the cache's share is a part of the layers' time.
  const double parts = prefill["prof_prefill_cache_s"].get<double>() + prefill["prof_prefill_layers_other_s"].get<double>() +
                       prefill["prof_prefill_rest_s"].get<double>();
  EXPECT_NEAR(parts, prefill["prof_prefill_s"].get<double>(), 1e-9);
  EXPECT_GT(prefill["prof_prefill_cache_s"].get<double>(), 0.0);
  EXPECT_GT(prefill["prof_prefill_layers_other_s"].get<double>(), 0.0);
  o.chunk = 1;  // token by token: all decode
  const auto decode = perplexity_over_tokens(*model, ids, o, kvq, nullptr);
  EXPECT_EQ(decode["prof_prefill_s"].get<double>(), 0.0);
  EXPECT_GT(decode["prof_decode_cache_s"].get<double>(), 0.0);
}

TEST(PerplexityProtocol, NanLogitsFailTheJob) {
  // A copy of tiny-gpt2 whose final LayerNorm bias is NaN (0xffff in fp16).
  namespace fs = std::filesystem;
  char tmpl[] = "/tmp/kvx_ppl_nan_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl, src = test::model_dir("tiny-gpt2");
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(src + "/" + f, dir + "/" + f);
  std::string bytes = test::read_text(src + "/model.safetensors");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(bytes[i]);
  auto h = nlohmann::json::parse(bytes.substr(8, n));
  const auto off = h["transformer.ln_f.bias"]["data_offsets"];
  for (uint64_t b = off[0].get<uint64_t>(); b < off[1].get<uint64_t>(); ++b) bytes[8 + n + b] = char(0xff);
  std::FILE* f = std::fopen((dir + "/model.safetensors").c_str(), "wb");
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);

  auto models = make_model_cache();
  JobContext ctx;
  ctx.models = models.get();
  nlohmann::json job = {{"model", {{"path", dir}}},
                        {"dataset", {{"path", test::wikitext_test()}}},
                        {"protocol", resolve_protocol({{"name", "perplexity"}, {"max_windows", 1}})},
                        {"method", none_method()}};
  try {
    run_job(job, ctx);
    ADD_FAILURE() << "NaN logits did not fail the job";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("logits became NaN/Inf at window 0, position 0"), std::string::npos)
        << e.what();
  }
  kvx::remove_tree(dir);
}

// Full WikiText-2 test through the protocol (run_job, defaults) vs transformers' number.
TEST(PerplexityFull, MatchesTransformersReference) {
  if (!test::slow_tests_enabled()) GTEST_SKIP() << "full-text perplexity takes minutes on 2 cores; set KVX_SLOW=1";
  auto models = make_model_cache();
  JobContext ctx;
  ctx.models = models.get();
  for (const char* name : {"tiny-gpt2", "small-code-llama"}) {
    const auto ref = test::reference(name);
    nlohmann::json job = {{"model", {{"path", test::model_dir(name)}}},
                          {"dataset", {{"path", test::wikitext_test()}}},
                          {"protocol", resolve_protocol({{"name", "perplexity"}})},
                          {"method", none_method()}};
    auto m = run_job(job, ctx);
    const double want = ref["wikitext2_test_ppl_window512_nonoverlap"].get<double>();
    EXPECT_NEAR(m["ppl"].get<double>() / want, 1.0, 0.01) << name << ": " << m.dump();
    if (ref.contains("scored_tokens")) EXPECT_EQ(m["tokens_scored"].get<int64_t>(), ref["scored_tokens"].get<int64_t>());
    std::printf("%s: ppl %.4f (reference %.4f), %lld tokens scored, %.0f tokens/s, %.1f s\n", name,
                m["ppl"].get<double>(), want, (long long)m["tokens_scored"].get<int64_t>(),
                m["tokens_per_s"].get<double>(), m["eval_seconds"].get<double>());
  }
}

}  // namespace
}  // namespace kvx
