// The forward pass against transformers' own outputs (reference.json of each fixture, computed on
// GPU from the bf16/fp16 weights): on CPU in fp32, and where CUDA is available on the GPU in the
// reference's own dtype (bf16 / fp16), hence the per-instance tolerances.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/model/model.h"
#include "experiments/generate.h"
#include "fixtures.h"

namespace kvx {
namespace {

struct Fixture {
  const char* name;
  const char* greedy_key;
  const char* device = "cpu";
  const char* dtype = "float32";
  double logit_tol = 0.1;   // last-position logits vs transformers
  double chunk_tol = 1e-3;  // chunked prefill vs one pass
};
void PrintTo(const Fixture& f, std::ostream* os) { *os << f.name << " on " << f.device << " in " << f.dtype; }

class Reference : public ::testing::TestWithParam<Fixture> {
 protected:
  void SetUp() override {
    if (std::string(GetParam().device) == "cuda" && !at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
    ref_ = test::reference(GetParam().name);
    model_ = load_model(test::model_dir(GetParam().name), GetParam().device, GetParam().dtype);
    for (const auto& v : ref_["prompt_ids"]) prompt_.push_back(v.get<int32_t>());
  }
  at::Tensor prompt_logits() {  // [T, V]
    auto cache = make_full_precision_policy();
    cache->reset(model_->info(), 1);
    at::Tensor ids = at::empty({1, int64_t(prompt_.size())}, at::kLong);
    for (size_t i = 0; i < prompt_.size(); ++i) ids[0][i] = prompt_[i];
    return model_->forward(ids.to(model_->device()), 0, *cache)[0].cpu();
  }
  nlohmann::json ref_;
  std::shared_ptr<CausalLM> model_;
  std::vector<int32_t> prompt_;
};

TEST_P(Reference, LastPositionLogitsMatchWithin0_1) {
  at::Tensor last = prompt_logits()[int64_t(prompt_.size()) - 1];
  const auto& want = ref_["last_logits_first16"];
  ASSERT_EQ(want.size(), 16u);
  for (int64_t i = 0; i < 16; ++i)
    EXPECT_NEAR(last[i].item<float>(), want[i].get<double>(), GetParam().logit_tol) << "logit " << i;
}

TEST_P(Reference, ArgmaxPerPositionWhereUnambiguous) {
  at::Tensor logits = prompt_logits();
  const auto& want = ref_["argmax_per_position"];
  ASSERT_EQ(int64_t(want.size()), logits.size(0));
  int checked = 0;
  for (int64_t t = 0; t < logits.size(0); ++t) {
    auto top = logits[t].topk(2);
    const float gap = (std::get<0>(top)[0] - std::get<0>(top)[1]).item<float>();
    if (gap <= 0.01f) continue;  // a near-tie may flip between fp32 here and bf16 on GPU
    EXPECT_EQ(std::get<1>(top)[0].item<int64_t>(), want[t].get<int64_t>()) << "position " << t;
    ++checked;
  }
  EXPECT_GE(checked, int(want.size()) - 1);
}

TEST_P(Reference, GreedyContinuationIsIdentical) {
  std::vector<int32_t> want;
  for (const auto& v : ref_[GetParam().greedy_key]) want.push_back(v.get<int32_t>());
  auto cache = make_full_precision_policy();
  GenerateOptions opt;
  opt.max_new_tokens = int64_t(want.size());
  EXPECT_EQ(generate_continuation(*model_, *cache, prompt_, opt), want);
}

TEST_P(Reference, ChunkedPrefillEqualsOnePass) {
  // The same prompt fed in pieces through the cache gives the same logits as one pass.
  at::Tensor full = prompt_logits();
  auto cache = make_full_precision_policy();
  cache->reset(model_->info(), 1);
  std::vector<at::Tensor> parts;
  const int64_t T = int64_t(prompt_.size());
  for (int64_t c0 = 0; c0 < T; c0 += 3) {
    const int64_t n = std::min<int64_t>(3, T - c0);
    at::Tensor ids = at::empty({1, n}, at::kLong);
    for (int64_t i = 0; i < n; ++i) ids[0][i] = prompt_[c0 + i];
    parts.push_back(model_->forward(ids.to(model_->device()), c0, *cache)[0].cpu());
  }
  EXPECT_LT((at::cat(parts, 0) - full).abs().max().item<float>(), GetParam().chunk_tol);
  if (model_->device().is_cpu()) {  // every chunk after the first read the cache, on the CPU reference
    EXPECT_EQ(cache->paths().kernel_path(), "cpu_reference");
    EXPECT_EQ(cache->paths().attention_impl(), "matmul");
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Reference,
                         ::testing::Values(Fixture{"small-code-llama", "greedy_32_ids"},
                                           Fixture{"tiny-gpt2", "greedy_24_ids"},
                                           Fixture{"small-code-llama", "greedy_32_ids", "cuda", "bfloat16", 0.25, 0.1},
                                           Fixture{"tiny-gpt2", "greedy_24_ids", "cuda", "float16", 0.1, 0.05}),
                         [](const auto& info) {
                           std::string n = std::string(info.param.name) + "_" + info.param.device;
                           for (auto& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

}  // namespace
}  // namespace kvx
