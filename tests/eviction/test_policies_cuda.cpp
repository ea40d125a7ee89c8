// Every eviction policy of seed 003, and the segment-store quantizers whose codecs have CUDA
// paths (core/cache/codec_cuda.h), on CUDA give the CPU's perplexity (fp32, same window): the
// policies mix device tensors with host loops, and a host read of device memory crashes only on
// a GPU (uncomp did). Skipped without CUDA; runs on the device machine.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "quantizers/registry.h"
#include "tests/protocols/test_support.h"

using namespace kvx;

namespace {

struct Case {
  const char* name;
  const char* method;  // JSON, or a kvx eval --method shorthand
};
class PolicyOnCuda : public ::testing::TestWithParam<Case> {};

nlohmann::json method_json(const std::string& m) {
  return m.front() == '{' ? nlohmann::json::parse(m) : resolve_method(parse_method_shorthand(m));
}

TEST_P(PolicyOnCuda, MatchesCpuPerplexity) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const auto job = test::make_job("small-code-llama",
                                  {{"name", "perplexity"}, {"seq_len", 384}, {"chunk", 32}, {"max_windows", 1}},
                                  method_json(GetParam().method), test::wikitext());
  JobContext ctx = test::context();  // a copy: the device below is this test's own
  double ppl[2];
  for (int d = 0; d < 2; ++d) {
    ctx.device = d == 0 ? "cpu" : "cuda";
    ppl[d] = run_job(job, ctx)["ppl"].get<double>();
  }
  EXPECT_NEAR(ppl[1], ppl[0], 2e-3 * ppl[0]) << GetParam().method;
}

INSTANTIATE_TEST_SUITE_P(
    Seed003, PolicyOnCuda,
    ::testing::Values(
        Case{"attention_prune", R"({"key":"none","value":"none","policy":{"type":"attention_prune","max_cache_size":96,"num_clusters":24,"pruning_interval":48,"lookback_window":24}})"},
        Case{"attention_prune_sequential", R"({"key":"none","value":"none","policy":{"type":"attention_prune","max_cache_size":96,"num_clusters":24,"pruning_interval":48,"lookback_window":24,"kmeans_sequential":true}})"},
        Case{"h2o", R"({"key":"none","value":"none","policy":{"type":"h2o","heavy":48,"recent":48}})"},
        Case{"sink_window", R"({"key":"none","value":"none","policy":{"type":"sink_window","sink_size":4,"window_size":92}})"},
        Case{"razor", R"({"key":"none","value":"none","policy":{"type":"razor","window_size":92,"prompt_len":64}})"},
        Case{"dynamic_kv", R"({"key":"none","value":"none","policy":{"type":"dynamic_kv","budget":96,"prompt_len":64}})"},
        Case{"uncomp", R"({"key":"none","value":"none","policy":{"type":"uncomp","budget":96,"prompt_len":64}})"},
        Case{"zack", R"({"key":"none","value":"none","policy":{"type":"zack","fit_tokens":64}})"},
        // r32: several flushes (and re-encodings of the whole body) inside the 384-token window
        Case{"kvq_k2v2", "kvq:k2v2:g32:r32"}, Case{"kvq_k4cv2_append", "kvq:k4cv2:g32:r32:s4:append"},
        Case{"kvq_k3v3_sliding", "kvq:k3v3:r32:sliding"}, Case{"selective_int8", "selective_int8:s4:w32"}),
    [](const ::testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });
}  // namespace
