// `kvx bench decode|prefill|eval` on the CPU at the tiny shape: the library functions behind the
// commands run end to end and report sane numbers (positive tokens/s, every ratio field present,
// the fp16 row as its own baseline). Speed itself is measured on the GPU machine, not here.
#include <gtest/gtest.h>

#include "experiments/decode_bench.h"
#include "experiments/throughput_bench.h"

namespace {

void expect_positive(const nlohmann::json& row, const char* key) {
  ASSERT_TRUE(row.contains(key)) << key << " missing in " << row.dump();
  EXPECT_GT(row[key].get<double>(), 0.0) << key << " in " << row.dump();
}

}  // namespace

TEST(BenchThroughput, PrefillAndEvalOnCpu) {
  kvx::ThroughputBenchOptions o;
  o.shape = "tiny";
  o.context = 48;
  o.batch = 2;
  o.chunk = 16;
  o.iters = 1;
  o.device = "cpu";
  o.methods = {"kvq:k4v4:g16:r16", "selective_int8:s4:w8"};  // both compress within 48 tokens
  for (const char* mode : {"prefill", "eval"}) {
    auto r = kvx::run_throughput_bench(mode, o);
    ASSERT_EQ(r["rows"].size(), 3u) << r.dump();
    EXPECT_EQ(r["rows"][0]["method"], "fp16");
    EXPECT_DOUBLE_EQ(r["rows"][0]["ratio_vs_fp16"].get<double>(), 1.0);
    for (const auto& row : r["rows"]) {
      expect_positive(row, "tokens_per_s");
      expect_positive(row, "ratio_vs_fp16");
      expect_positive(row, "kv_bytes");
      EXPECT_EQ(row["kernel_path"], "cpu");
    }
    // compressed caches hold fewer bytes than the fp16 one
    EXPECT_LT(r["rows"][1]["kv_bytes"].get<int64_t>(), r["rows"][0]["kv_bytes"].get<int64_t>());
    EXPECT_FALSE(kvx::format_throughput_bench(r).empty());
  }
  EXPECT_ANY_THROW(kvx::run_throughput_bench("train", o));
}

TEST(BenchDecode, Int8AndHiggsRowsOnCpu) {
  kvx::DecodeBenchOptions o;
  o.shape = "tiny";
  o.context = 200;
  o.batch = 1;
  o.iters = 2;
  o.device = "cpu";
  o.residual = 16;
  o.methods = {"kvq:k4v4", "int8:s4w16", "higgs:d2n16"};
  auto r = kvx::run_decode_bench(o);
  ASSERT_EQ(r["rows"].size(), 5u) << r.dump();
  for (const auto& row : r["rows"]) {
    expect_positive(row, "attn_us");
    expect_positive(row, "attn_speedup_vs_sdpa");
    expect_positive(row, "decode_tok_s");
    expect_positive(row, "decode_speedup_vs_sdpa");
  }
  EXPECT_EQ(r["rows"][3]["method"], "int8:s4w16");
  expect_positive(r["rows"][3], "append_us_per_token_per_layer");
  EXPECT_EQ(r["rows"][4]["kernel_path"], "cpu");
  EXPECT_FALSE(kvx::format_decode_bench(r).empty());
  o.methods = {"int8:x"};
  EXPECT_ANY_THROW(kvx::run_decode_bench(o));
}
