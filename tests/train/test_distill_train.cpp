// kvx train on the tiny-gpt2 fixture: a few steps lower the distillation loss, the written
// checkpoint loads and gives a finite perplexity, and --resume continues from the saved step
// to the same weights as an uninterrupted run.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "core/cache/kv_cache_policy.h"
#include "core/common/error.h"
#include "core/model/model.h"
#include "core/model/safetensors.h"
#include "experiments/distill_train.h"
#include "quantizers/registry.h"
#include "tests/model/fixtures.h"
#include "core/common/remove_tree.h"

namespace fs = std::filesystem;

namespace {

std::string tmp_dir(const std::string& tag) {
  fs::path p = fs::temp_directory_path() / ("kvx_distill_" + tag + "_" + std::to_string(::getpid()));
  kvx::remove_tree(p);
  return p.string();
}

kvx::TrainOptions small_run(const std::string& out) {
  kvx::TrainOptions o;
  o.model = kvx::test::model_dir("tiny-gpt2");
  o.data = kvx::test::source_dir() + "/data/wikitext-2/valid.txt";
  o.out = out;
  o.method = "sink_window:s2:w16";
  o.max_length = 64;
  o.chunk = 16;
  o.batch = 2;
  o.max_sequences = 4;  // two batches per epoch
  o.max_steps = 6;
  o.lr = 2e-3;
  o.warmup_steps = 0;
  o.eval_batches = 2;
  o.checkpoint_every = 2;
  return o;
}

double ppl_through(kvx::CausalLM& m, const std::string& method, const at::Tensor& ids, int64_t chunk) {
  at::NoGradGuard ng;
  auto policy = kvx::make_policy(kvx::resolve_method(kvx::parse_method_shorthand(method)));
  policy->reset(m.info(), 1);
  std::vector<at::Tensor> parts;
  for (int64_t off = 0; off < ids.size(1); off += chunk)
    parts.push_back(m.forward(ids.narrow(1, off, std::min(chunk, ids.size(1) - off)), off, *policy));
  at::Tensor logits = at::cat(parts, 1)[0];
  const int64_t T = ids.size(1);
  at::Tensor nll = at::nll_loss(at::log_softmax(logits.narrow(0, 0, T - 1), -1), ids[0].narrow(0, 1, T - 1));
  return std::exp(nll.item<double>());
}

TEST(DistillTrain, TrainingEnabledModelKeepsItsOutputs) {
  auto a = kvx::load_model(kvx::test::model_dir("tiny-gpt2"));
  auto b = kvx::load_model(kvx::test::model_dir("tiny-gpt2"));
  b->enable_training();
  ASSERT_TRUE(b->training());
  for (const auto& p : b->parameters()) EXPECT_TRUE(p.requires_grad());
  at::Tensor ids = at::arange(1, 40, at::kLong).unsqueeze(0);
  auto pa = kvx::make_full_precision_policy(), pb = kvx::make_full_precision_policy();
  pa->reset(a->info(), 1);
  pb->reset(b->info(), 1);
  at::Tensor la = a->forward(ids, 0, *pa);
  at::NoGradGuard ng;
  at::Tensor lb = b->forward(ids, 0, *pb);
  EXPECT_TRUE(at::allclose(la, lb, 1e-5, 1e-5));
}

TEST(DistillTrain, LossDecreasesAndCheckpointLoads) {
  const std::string out = tmp_dir("run");
  kvx::TrainOptions o = small_run(out);
  const kvx::TrainResult r = kvx::distill_train(o, nullptr);
  EXPECT_EQ(r.start_step, 0);
  EXPECT_EQ(r.end_step, 6);
  EXPECT_TRUE(r.finished);
  ASSERT_EQ(r.log.size(), 6u);
  const double before = r.eval_before["loss"].get<double>(), after = r.eval_after["loss"].get<double>();
  EXPECT_GT(r.eval_before["kl"].get<double>(), 0.0);  // the cache really compresses
  EXPECT_LT(after, before);
  EXPECT_LT(r.eval_after["kl"].get<double>(), r.eval_before["kl"].get<double>());
  ASSERT_TRUE(fs::exists(out + "/model.safetensors"));
  ASSERT_TRUE(fs::exists(out + "/training.json"));
  ASSERT_TRUE(fs::exists(out + "/checkpoint/state.json"));
  // Saved in the source's dtype (F16 for tiny-gpt2) and loadable.
  auto f = kvx::SafetensorsFile::open(out + "/model.safetensors");
  EXPECT_EQ(f->entry("transformer.wte.weight").dtype, "F16");
  auto m = kvx::load_model(out);
  auto orig = kvx::load_model(o.model);
  at::Tensor ids = at::arange(0, 48, at::kLong).remainder(97).add(5).unsqueeze(0);
  const double ppl = ppl_through(*m, "sink_window:s2:w16", ids, 16);
  EXPECT_TRUE(std::isfinite(ppl)) << ppl;
  EXPECT_GT(ppl, 1.0);
  // The weights really changed.
  EXPECT_FALSE(at::equal(m->hf_state_dict()[0].second, orig->hf_state_dict()[0].second));
  kvx::remove_tree(out);
}

TEST(DistillTrain, ResumeContinuesFromTheSavedStep) {
  const std::string a = tmp_dir("resume"), b = tmp_dir("straight");
  kvx::TrainOptions o = small_run(a);
  o.max_steps = 4;
  o.eval_batches = 0;
  o.save_dtype = "float32";
  o.stop_after = 2;
  kvx::TrainResult r1 = kvx::distill_train(o, nullptr);
  EXPECT_EQ(r1.end_step, 2);
  EXPECT_FALSE(r1.finished);
  EXPECT_FALSE(fs::exists(a + "/model.safetensors"));
  ASSERT_TRUE(fs::exists(a + "/checkpoint/optimizer.pt"));

  kvx::TrainOptions bad = o;
  bad.resume = true;
  bad.lr = 1e-4;
  EXPECT_THROW(kvx::distill_train(bad, nullptr), kvx::Error);  // options must match

  o.resume = true;
  o.stop_after = 0;
  kvx::TrainResult r2 = kvx::distill_train(o, nullptr);
  EXPECT_EQ(r2.start_step, 2);
  EXPECT_EQ(r2.end_step, 4);
  EXPECT_TRUE(r2.finished);
  ASSERT_EQ(r2.log.size(), 4u);  // steps 1-2 from the checkpoint, 3-4 from this run
  EXPECT_EQ(r2.log[2].step, 3);

  kvx::TrainOptions s = small_run(b);
  s.max_steps = 4;
  s.eval_batches = 0;
  s.save_dtype = "float32";
  kvx::TrainResult r3 = kvx::distill_train(s, nullptr);
  ASSERT_EQ(r3.log.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(r2.log[i].loss, r3.log[i].loss, 1e-4) << i;
  auto ma = kvx::load_model(a), mb = kvx::load_model(b);
  auto sa = ma->hf_state_dict(), sb = mb->hf_state_dict();
  ASSERT_EQ(sa.size(), sb.size());
  double worst = 0;
  for (size_t i = 0; i < sa.size(); ++i) worst = std::max(worst, (sa[i].second - sb[i].second).abs().max().item<double>());
  EXPECT_LT(worst, 1e-5);
  kvx::remove_tree(a);
  kvx::remove_tree(b);
}

TEST(DistillTrain, BadInputIsOneClearError) {
  kvx::TrainOptions o = small_run(tmp_dir("bad"));
  o.data = "/no/such/file.txt";
  try {
    kvx::distill_train(o, nullptr);
    FAIL();
  } catch (const kvx::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/no/such/file.txt"), std::string::npos);
  }
  o = small_run(tmp_dir("bad2"));
  o.method = "kvq:banana";
  EXPECT_THROW(kvx::distill_train(o, nullptr), kvx::Error);
  o = small_run(tmp_dir("bad3"));
  o.resume = true;
  EXPECT_THROW(kvx::distill_train(o, nullptr), kvx::Error);
  kvx::remove_tree(tmp_dir("bad"));
  kvx::remove_tree(tmp_dir("bad2"));
  kvx::remove_tree(tmp_dir("bad3"));
}

}  // namespace
