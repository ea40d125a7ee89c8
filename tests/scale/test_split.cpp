// Layer-wise model split (core/model/placement.h): on CPU a placement [cpu, cpu] runs the same
// split code as [cuda:0, cuda:1] (per-layer loading, hidden state moves, per-device RoPE,
// head on the last device); its logits must equal the unsplit model's.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/common/error.h"
#include "core/model/model.h"
#include "core/model/placement.h"

namespace {

std::string model_dir(const std::string& name) { return std::string(KVX_SOURCE_DIR) + "/data/models/" + name; }

// Logits of 24 tokens fed as two chunks through a full-precision cache.
at::Tensor run(kvx::CausalLM& m) {
  auto cache = kvx::make_full_precision_policy();
  cache->reset(m.info(), 1);
  at::Tensor ids = at::arange(5, 29, at::kLong).unsqueeze(0);
  at::Tensor a = m.forward(ids.narrow(1, 0, 16), 0, *cache);
  at::Tensor b = m.forward(ids.narrow(1, 16, 8), 16, *cache);
  return at::cat({a, b}, 1);
}

void check_same(const std::string& name, const std::string& spec) {
  auto single = kvx::load_model(model_dir(name), "cpu", "float32");
  auto split = kvx::load_model_split(model_dir(name), kvx::parse_placement(spec), "float32");
  ASSERT_EQ(split->layer_devices().size(), static_cast<size_t>(split->config().n_layers));
  EXPECT_TRUE(single->layer_devices().empty());
  at::Tensor x = run(*single), y = run(*split);
  ASSERT_EQ(x.sizes(), y.sizes());
  EXPECT_TRUE(at::equal(x, y)) << name << " " << spec << ": max |diff| " << (x - y).abs().max().item<float>();
}

TEST(Split, Gpt2TwoWayEqualsUnsplit) { check_same("tiny-gpt2", "cpu,cpu"); }
TEST(Split, LlamaTwoWayEqualsUnsplit) { check_same("small-code-llama", "cpu,cpu"); }
TEST(Split, LlamaThreeWayWithLimitsEqualsUnsplit) { check_same("small-code-llama", "cpu@1GiB,cpu@1GiB,cpu"); }

TEST(Split, LoadModelParsesSplitStrings) {
  auto m = kvx::load_model(model_dir("tiny-gpt2"), "cpu,cpu", "float32");
  EXPECT_EQ(m->layer_devices().size(), static_cast<size_t>(m->config().n_layers));
  auto one = kvx::load_model(model_dir("tiny-gpt2"), "cpu@1GiB", "float32");  // one device: no split
  EXPECT_TRUE(one->layer_devices().empty());
}

TEST(Placement, EvenSplitByCount) {
  auto p = kvx::parse_placement("cpu,cpu");
  EXPECT_EQ(kvx::assign_layers(4, 10, 5, 5, p), (std::vector<int>{0, 0, 1, 1}));
  EXPECT_EQ(kvx::assign_layers(5, 10, 5, 5, p), (std::vector<int>{0, 0, 0, 1, 1}));
  auto p3 = kvx::parse_placement("cpu, cpu, cpu");
  EXPECT_EQ(kvx::assign_layers(6, 1, 1, 1, p3), (std::vector<int>{0, 0, 1, 1, 2, 2}));
  EXPECT_EQ(kvx::assign_layers(3, 1, 1, 1, kvx::parse_placement("cpu")), (std::vector<int>{0, 0, 0}));
}

TEST(Placement, MaxMemoryFillsInOrder) {
  // device 0: 100 bytes, embedding 20 -> 80 left -> 2 layers of 30; the rest on device 1.
  auto p = kvx::parse_placement("cpu@100,cpu@1000");
  EXPECT_EQ(kvx::assign_layers(5, 30, 20, 20, p), (std::vector<int>{0, 0, 1, 1, 1}));
  auto q = kvx::parse_placement("cpu@1KiB,cpu");
  EXPECT_EQ(q.max_bytes[0], 1024);
  EXPECT_EQ(q.max_bytes[1], 0);
  EXPECT_EQ(kvx::parse_placement("cpu@2GiB").max_bytes[0], int64_t{2} << 30);
  EXPECT_EQ(kvx::parse_placement("cpu@1.5GB").max_bytes[0], int64_t{1500000000});
  // Too small: named in the error.
  EXPECT_THROW(kvx::assign_layers(10, 30, 20, 20, kvx::parse_placement("cpu@100,cpu@100")), kvx::Error);
  EXPECT_THROW(kvx::assign_layers(1, 30, 200, 20, kvx::parse_placement("cpu@100,cpu@100")), kvx::Error);
}

TEST(Placement, BadSpecs) {
  for (const char* bad : {"", "cpu,", "gpu", "cpu@", "cpu@-1GiB", "cpu@12XB", "cpu@@1"})
    EXPECT_THROW(kvx::parse_placement(bad), kvx::Error) << bad;
}

}  // namespace
