#include <gtest/gtest.h>

#include "core/common/error.h"
#include "core/tokenizer/tokenizer.h"
#include "experiments/passkey.h"
#include "tests/protocols/test_support.h"

using namespace kvx;

namespace {
const Tokenizer& tok() {
  static Tokenizer t = Tokenizer::load(test::model_dir("small-code-llama") + "/tokenizer.json");
  return t;
}
int64_t count_sub(const std::vector<int32_t>& hay, const std::vector<int32_t>& needle, int64_t* first) {
  int64_t n = 0;
  for (size_t i = 0; i + needle.size() <= hay.size(); ++i)
    if (std::equal(needle.begin(), needle.end(), hay.begin() + i)) {
      if (n++ == 0) *first = int64_t(i);
    }
  return n;
}
int64_t count_text(const std::string& hay, const std::string& needle) {
  int64_t n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}
}  // namespace

// The key appears exactly once, at the intended token depth, and the prompt has the exact length.
TEST(PasskeyPrompt, KeyOnceAtIntendedDepth) {
  const std::string key = "73914";
  for (int64_t length : {128, 300, 1000}) {
    for (double depth : {0.0, 25.0, 50.0, 75.0, 100.0}) {
      PasskeyPrompt p = build_passkey_prompt(tok(), length, depth, key);
      ASSERT_EQ(int64_t(p.ids.size()), length) << "length " << length;
      int64_t first = -1;
      EXPECT_EQ(count_sub(p.ids, p.key_ids, &first), 1);
      EXPECT_EQ(first, p.key_pos);
      const std::string text = tok().decode(p.ids, true);
      EXPECT_EQ(count_text(text, key), 1) << text;
      // Filler before the needle = round(depth · F): independent recomputation from the pieces.
      const int64_t intro = int64_t(tok().encode(
          "There is an important pass key hidden inside a lot of irrelevant text. Find it and memorize it. "
          "I will quiz you about the pass key.\n", true).size());
      const int64_t expect_before = static_cast<int64_t>(std::nearbyint(depth / 100.0 * p.filler_tokens));
      EXPECT_EQ(p.needle_pos, intro + expect_before) << "depth " << depth;
      EXPECT_EQ(tok().decode(std::vector<int32_t>(p.ids.begin() + p.needle_pos, p.ids.begin() + p.key_pos)),
                " The pass key is");
      if (depth == 0) EXPECT_EQ(p.needle_pos, intro);
      if (depth == 100) EXPECT_EQ(int64_t(p.ids.size()) - (p.key_pos + int64_t(p.key_ids.size())),
                                  int64_t(tok().encode(". Remember it.", false).size() +
                                          tok().encode("\nWhat is the pass key? The pass key is", false).size()));
    }
  }
  EXPECT_NE(tok().decode(build_passkey_prompt(tok(), 200, 50, key).ids).find("What is the pass key?"),
            std::string::npos);
}

TEST(PasskeyPrompt, TooShortOrBadDepthIsAnError) {
  EXPECT_THROW(build_passkey_prompt(tok(), 20, 50, "12345"), kvx::Error);
  EXPECT_THROW(build_passkey_prompt(tok(), 500, 101, "12345"), kvx::Error);
}

TEST(PasskeyKey, DeterministicDigits) {
  const std::string a = passkey_key(0, 3, 5);
  EXPECT_EQ(a, passkey_key(0, 3, 5));
  EXPECT_NE(a, passkey_key(0, 4, 5));
  EXPECT_EQ(a.size(), 5u);
  EXPECT_NE(a[0], '0');
  for (char c : a) EXPECT_TRUE(c >= '0' && c <= '9');
}

TEST(PasskeyAnswer, FirstNumberMustMatch) {
  EXPECT_TRUE(passkey_correct(" 73914. Remember", "73914"));
  EXPECT_TRUE(passkey_correct("73914", "73914"));
  EXPECT_FALSE(passkey_correct(" 739140", "73914"));
  EXPECT_FALSE(passkey_correct(" 7391", "73914"));
  EXPECT_FALSE(passkey_correct(" 12 73914", "73914"));
  EXPECT_FALSE(passkey_correct(" the key", "73914"));
}

TEST(PasskeyProtocol, RunsOneCell) {
  const nlohmann::json proto = {{"name", "passkey"}, {"length", 160}, {"depth", 50}, {"trials", 2}};
  auto job = test::make_job("tiny-gpt2", proto, {{"key", "none"}, {"value", "none"}});
  nlohmann::json m = run_job(job, test::context());
  EXPECT_EQ(m["trials"].get<int64_t>(), 2);
  EXPECT_GE(m["accuracy"].get<double>(), 0.0);
  EXPECT_LE(m["accuracy"].get<double>(), 1.0);
  EXPECT_GT(m["kv_bytes_max"].get<int64_t>(), 0);
  // 160 + answer tokens would not fit a 1024 context only past it:
  const nlohmann::json too_long = {{"name", "passkey"}, {"length", 1024}, {"trials", 1}};
  EXPECT_THROW(run_job(test::make_job("tiny-gpt2", too_long, {{"key", "none"}, {"value", "none"}}), test::context()),
               kvx::Error);
}
