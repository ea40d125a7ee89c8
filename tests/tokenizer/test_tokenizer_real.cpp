// The two fixture models' tokenizers against transformers' own output (reference.json),
// and lossless decode(encode(x)) over the whole WikiText-2 test split.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/tokenizer/tokenizer.h"
#include "tests/tokenizer/tokenizer_test_util.h"

namespace {

using kvx::Tokenizer;
using kvx::test::read_text;
using kvx::test::source_dir;

struct Fixture {
  const char* model;
  const char* greedy_ids_key;
  const char* greedy_text_key;
  int64_t vocab;
};

class RealTokenizer : public ::testing::TestWithParam<Fixture> {
 protected:
  std::string dir() const { return source_dir() + "/data/models/" + GetParam().model; }
  nlohmann::json reference() const { return nlohmann::json::parse(read_text(dir() + "/reference.json")); }
  Tokenizer load() const { return Tokenizer::load(dir() + "/tokenizer.json"); }
};

TEST_P(RealTokenizer, PromptIdsMatchTransformers) {
  const auto ref = reference();
  const Tokenizer tok = load();
  const auto expected = ref.at("prompt_ids").get<std::vector<int32_t>>();
  EXPECT_EQ(tok.encode(ref.at("prompt").get<std::string>()), expected);
  // Without special tokens: the same ids minus the leading BOS.
  EXPECT_EQ(tok.encode(ref.at("prompt").get<std::string>(), false),
            std::vector<int32_t>(expected.begin() + 1, expected.end()));
}

TEST_P(RealTokenizer, GreedyIdsDecodeToTransformersText) {
  const auto ref = reference();
  const Tokenizer tok = load();
  const auto ids = ref.at(GetParam().greedy_ids_key).get<std::vector<int32_t>>();
  EXPECT_EQ(tok.decode(ids), ref.at(GetParam().greedy_text_key).get<std::string>());
}

TEST_P(RealTokenizer, SpecialIdsAndVocabSize) {
  const Tokenizer tok = load();
  EXPECT_EQ(tok.bos_id(), 0);  // <|begin_of_text|>, see data/models/README
  EXPECT_EQ(tok.eos_id(), 1);  // <|end_of_text|>
  EXPECT_TRUE(tok.adds_bos());
  EXPECT_EQ(tok.vocab_size(), GetParam().vocab);
  EXPECT_EQ(tok.decode({0, 1}), "<|begin_of_text|><|end_of_text|>");
  EXPECT_EQ(tok.decode({0, 1}, true), "");
  EXPECT_EQ(tok.encode("a<|end_of_text|>", false).back(), 1);
}

TEST_P(RealTokenizer, WikiTextRoundTripIsLossless) {
  const std::string text = read_text(source_dir() + "/data/wikitext-2/test.txt");
  ASSERT_GT(text.size(), 1000000u);
  const Tokenizer tok = load();
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = tok.encode(text, false);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ info ] %s: %zu bytes -> %zu tokens in %.2f s\n", GetParam().model, text.size(), ids.size(), secs);
  ASSERT_FALSE(ids.empty());
  for (int32_t id : ids) ASSERT_TRUE(id >= 2 && id < tok.vocab_size()) << id;  // no specials in the text
  EXPECT_TRUE(tok.decode(ids) == text);  // not EXPECT_EQ: a 1.2 MB diff is useless
  const auto with_bos = tok.encode(text.substr(0, 2000), true);
  ASSERT_FALSE(with_bos.empty());
  EXPECT_EQ(with_bos.front(), tok.bos_id());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, RealTokenizer,
                         ::testing::Values(Fixture{"small-code-llama", "greedy_32_ids", "greedy_32_text", 8192},
                                           Fixture{"tiny-gpt2", "greedy_24_ids", "greedy_24_text", 4096}),
                         [](const auto& info) {
                           std::string n = info.param.model;
                           for (auto& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

}  // namespace
