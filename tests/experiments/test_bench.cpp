// `kvx bench decode|prefill|eval` on the CPU at the tiny shape: the library functions behind the
// commands run end to end through the product's model and the registry's caches, and report sane
// numbers (positive tokens/s, every ratio field present, the fp16 row as its own baseline, the
// attention path each method takes). Speed itself is measured on the GPU machine, not here.
#include <gtest/gtest.h>

#include "experiments/decode_bench.h"
#include "experiments/throughput_bench.h"
#include "quantizers/registry.h"

namespace {

void expect_positive(const nlohmann::json& row, const char* key) {
  ASSERT_TRUE(row.contains(key)) << key << " missing in " << row.dump();
  EXPECT_GT(row[key].get<double>(), 0.0) << key << " in " << row.dump();
}

std::string eval_label(const std::string& shorthand) {
  return kvx::method_label(kvx::resolve_method(kvx::parse_method_shorthand(shorthand)));
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
    }
    // prefill is one chunk over nothing cached; eval's later chunks read the cache (the CPU
    // reference of the methods' kernels)
    EXPECT_EQ(r["rows"][1]["kernel_path"], std::string(mode) == "prefill" ? "chunk_only" : "cpu_reference") << r.dump();
    EXPECT_EQ(r["rows"][1]["label"], eval_label("kvq:k4v4:g16:r16"));
    // compressed caches hold fewer bytes than the fp16 one
    EXPECT_LT(r["rows"][1]["kv_bytes"].get<int64_t>(), r["rows"][0]["kv_bytes"].get<int64_t>());
    EXPECT_FALSE(kvx::format_throughput_bench(r).empty());
  }
  EXPECT_ANY_THROW(kvx::run_throughput_bench("train", o));
}

// The decode bench builds every cache through the registry: a method means what `kvx eval --method`
// means (same label), and each row says which attention path it took.
TEST(BenchDecode, RegistryCachesOnCpu) {
  kvx::DecodeBenchOptions o;
  o.shape = "tiny";
  o.context = 200;
  o.batch = 1;
  o.iters = 2;
  o.steps = 3;
  o.device = "cpu";
  o.methods = {"kvq:k4v4", "selective_int8:s4:w16", "kvq:k3v3"};
  auto r = kvx::run_decode_bench(o);
  ASSERT_EQ(r["rows"].size(), 4u) << r.dump();
  for (const auto& row : r["rows"]) {
    expect_positive(row, "attn_us");
    expect_positive(row, "attn_speedup_vs_fp16");
    expect_positive(row, "decode_tok_s");
    expect_positive(row, "decode_speedup_vs_fp16");
    expect_positive(row, "roofline_tok_s");
  }
  EXPECT_EQ(r["rows"][0]["method"], "fp16");
  EXPECT_EQ(r["rows"][0]["kernel_path"], "cpu_reference");
  EXPECT_EQ(r["rows"][1]["label"], eval_label("kvq:k4v4"));
  EXPECT_EQ(r["rows"][1]["kernel_path"], "cpu_reference");
  EXPECT_EQ(r["rows"][2]["kernel_path"], "cpu_reference");
  EXPECT_EQ(r["rows"][3]["kernel_path"], "dequant_then_attend");  // 3-bit codes have no kernel layout
  EXPECT_LT(r["rows"][1]["kv_bytes_per_layer"].get<int64_t>(), r["rows"][0]["kv_bytes_per_layer"].get<int64_t>());
  EXPECT_FALSE(kvx::format_decode_bench(r).empty());
  o.methods = {"int8:x"};
  EXPECT_ANY_THROW(kvx::run_decode_bench(o));
}
