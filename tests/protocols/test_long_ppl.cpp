#include <gtest/gtest.h>

#include <cmath>

#include "core/common/error.h"
#include "experiments/long_ppl.h"
#include "tests/protocols/test_support.h"

using namespace kvx;

// Bucket width 2: positions 1 | 2 3 | 4 5 with NLLs 1 | 2 4 | 0.5 0.5 -> ppl e^1, e^3, e^0.5;
// overall exp(8/5).
TEST(BucketedNll, HandComputed) {
  BucketedNll b(2);
  b.add(1, 1.0);
  b.add(2, 2.0);
  b.add(3, 4.0);
  b.add(4, 0.5);
  b.add(5, 0.5);
  nlohmann::json m;
  b.write(m);
  EXPECT_NEAR(m["ppl_0_2"].get<double>(), std::exp(1.0), 1e-12);
  EXPECT_NEAR(m["ppl_2_4"].get<double>(), std::exp(3.0), 1e-12);
  EXPECT_NEAR(m["ppl_4_6"].get<double>(), std::exp(0.5), 1e-12);
  EXPECT_EQ(m["tokens_2_4"].get<int64_t>(), 2);
  EXPECT_NEAR(m["ppl"].get<double>(), std::exp(8.0 / 5.0), 1e-12);
  ASSERT_EQ(m["buckets"].size(), 3u);
  EXPECT_EQ(m["buckets"][1]["from"].get<int64_t>(), 2);
}

TEST(BucketedNll, Labels) {
  EXPECT_EQ(BucketedNll::label(0, 1024, 1024), "0_1k");
  EXPECT_EQ(BucketedNll::label(1024, 2048, 1024), "1k_2k");
  EXPECT_EQ(BucketedNll::label(2048, 4096, 2048), "2k_4k");
  EXPECT_EQ(BucketedNll::label(500, 1000, 500), "500_1000");
}

TEST(BucketedNll, InfIsAnError) {
  BucketedNll b(4);
  b.add(1, INFINITY);
  nlohmann::json m;
  EXPECT_THROW(b.write(m), kvx::Error);
}

// Cross-check with the perplexity protocol (an independent implementation of the same
// windowing): one non-overlapping 256-token window, full precision, every position scored.
TEST(LongPplProtocol, AgreesWithPerplexityOnOneWindow) {
  const nlohmann::json lp = {{"name", "long_ppl"}, {"seq_len", 256}, {"chunk", 64}, {"bucket", 100}, {"max_docs", 1}};
  auto job = test::make_job("tiny-gpt2", lp, {{"key", "none"}, {"value", "none"}}, test::wikitext());
  nlohmann::json m = run_job(job, test::context());
  EXPECT_EQ(m["tokens_scored"].get<int64_t>(), 255);
  EXPECT_EQ(m["tokens_0_100"].get<int64_t>(), 99);
  EXPECT_EQ(m["tokens_200_300"].get<int64_t>(), 56);
  const nlohmann::json pp = {{"name", "perplexity"}, {"seq_len", 256}, {"chunk", 256}, {"max_windows", 1}};
  auto job2 = test::make_job("tiny-gpt2", pp, {{"key", "none"}, {"value", "none"}}, test::wikitext());
  nlohmann::json ref = run_job(job2, test::context());
  EXPECT_EQ(ref["tokens_scored"].get<int64_t>(), 255);
  EXPECT_NEAR(m["ppl"].get<double>(), ref["ppl"].get<double>(), 1e-4 * ref["ppl"].get<double>());
}

TEST(LongPplProtocol, JsonlRecordsAreDocuments) {
  const nlohmann::json lp = {{"name", "long_ppl"}, {"seq_len", 128}, {"bucket", 32}, {"documents", "records"},
                             {"max_docs", 0}, {"prompt_field", "context"}};
  auto job = test::make_job("tiny-gpt2", lp, {{"key", "none"}, {"value", "none"}},
                            test::source_dir() + "/data/examples/longbench_style.jsonl");
  nlohmann::json m = run_job(job, test::context());
  EXPECT_GE(m["documents"].get<int64_t>(), 3);
  EXPECT_LE(m["longest_document"].get<int64_t>(), 128);
  EXPECT_TRUE(m.contains("ppl_0_32"));
}
