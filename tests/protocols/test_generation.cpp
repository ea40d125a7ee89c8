#include <gtest/gtest.h>

#include <fstream>

#include "core/common/error.h"
#include "core/model/model.h"
#include "experiments/generation.h"
#include "tests/protocols/test_support.h"

using namespace kvx;

namespace {
nlohmann::json reference(const std::string& model) {
  std::ifstream in(test::model_dir(model) + "/reference.json");
  return nlohmann::json::parse(in);
}
}  // namespace

// transformers' greedy continuation (reference.json), with a one-shot and a chunked prefill.
TEST(GreedyGenerate, MatchesTransformersContinuation) {
  const auto ref = reference("tiny-gpt2");
  auto model = load_model(test::model_dir("tiny-gpt2"));
  auto policy = make_full_precision_policy();
  const auto prompt = ref["prompt_ids"].get<std::vector<int32_t>>();
  const auto want = ref["greedy_24_ids"].get<std::vector<int32_t>>();
  for (int64_t chunk : {0, 3}) {
    GreedyOptions g;
    g.new_tokens = int64_t(want.size());
    g.prefill_chunk = chunk;
    GreedyOutput o = greedy_generate(*model, *policy, prompt, g);
    EXPECT_EQ(o.tokens, want) << "chunk " << chunk;
    EXPECT_EQ(o.prefill_tokens, int64_t(prompt.size()));
    EXPECT_EQ(o.decode_steps, int64_t(want.size()) - 1);
  }
  // Stopping at an id: 262 is the second generated token, so one token comes back.
  GreedyOptions g;
  g.new_tokens = 24;
  g.eos = 262;
  EXPECT_EQ(greedy_generate(*model, *policy, prompt, g).tokens, std::vector<int32_t>{292});
}

TEST(TruncateMiddle, KeepsFirstAndLastHalves) {
  EXPECT_EQ(truncate_middle({1, 2, 3, 4, 5, 6, 7}, 4), (std::vector<int32_t>{1, 2, 6, 7}));
  EXPECT_EQ(truncate_middle({1, 2, 3, 4, 5, 6, 7}, 3), (std::vector<int32_t>{1, 6, 7}));
  EXPECT_EQ(truncate_middle({1, 2, 3}, 5), (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(truncate_middle({1, 2, 3}, 0), (std::vector<int32_t>{1, 2, 3}));
}

// Full precision against itself: every comparison with fp16 is perfect; text spans have the
// text's own continuation as reference.
TEST(GenerationProtocol, FullPrecisionAgreesWithItself) {
  const nlohmann::json proto = {{"name", "generation"}, {"new_tokens", 8}, {"max_prompts", 2},
                                {"prompt_len", 48},     {"chunk", 16},     {"profile", true}};
  auto job = test::make_job("tiny-gpt2", proto, {{"key", "none"}, {"value", "none"}}, test::wikitext());
  nlohmann::json m = run_job(job, test::context());
  EXPECT_EQ(m["prompts"].get<int64_t>(), 2);
  EXPECT_DOUBLE_EQ(m["rouge_l_fp16"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(m["token_agreement"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(m["exact_match_fp16"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(m["rouge_l_ref"].get<double>(), m["rouge_l_ref_fp16"].get<double>());
  EXPECT_GT(m["decode_tok_s"].get<double>(), 0.0);
  EXPECT_GT(m["prefill_tok_s"].get<double>(), 0.0);
  // 6 layers · 1 batch · 4 kv heads · 64 dims · (48 prompt + 7 decoded tokens cached) · 2 (K, V)
  // · 2 bytes (the full-precision policy accounts values as fp16,
  // docs/methods/README.md, "Memory accounting").
  EXPECT_EQ(m["kv_bytes_max"].get<int64_t>(), 6 * 4 * 64 * 55 * 2 * 2);
  // Held over time: after the prefill (48 tokens) and the 7 decode steps (49..55): 51.5 on average.
  EXPECT_DOUBLE_EQ(m["kv_bytes_mean"].get<double>(), 6 * 4 * 64 * 51.5 * 2 * 2);
  for (const char* k : {"prof_prefill_s", "prof_decode_s", "prof_prefill_cache_s", "prof_decode_cache_s",
                        "prof_prefill_layers_other_s", "prof_decode_layers_other_s", "prof_prefill_rest_s",
                        "prof_decode_rest_s"})
    EXPECT_GE(m[k].get<double>(), 0.0) << k;
  EXPECT_LE(m["prof_cache_fraction"].get<double>(), 1.0);
}

TEST(GenerationProtocol, JsonlPromptsWithReferences) {
  const nlohmann::json proto = {{"name", "generation"}, {"new_tokens", 4}, {"max_prompts", 2}};
  auto job = test::make_job("tiny-gpt2", proto, parse_method_shorthand("kvq:k2v2:r0"),
                            test::source_dir() + "/data/examples/prompts.jsonl");
  nlohmann::json m = run_job(job, test::context());
  EXPECT_EQ(m["prompts"].get<int64_t>(), 2);
  EXPECT_TRUE(m.contains("rouge_l_ref"));
  EXPECT_GE(m["rouge_l_fp16"].get<double>(), 0.0);
  EXPECT_LE(m["rouge_l_fp16"].get<double>(), 1.0);
}
