// The decode loop's plain runs (core/model/decode_steps.h) against plain eager steps: on the CPU the
// emulated runs (the code a captured step runs, without the capture: stores at the step counter's
// row, kernels' references over lengths read from it, the host's bookkeeping advanced afterwards)
// give every step's logits, the bytes held and the attention calls of eager decoding; methods whose
// steps are never plain (evictions) run every step eagerly. On CUDA (skipped
// without it) the captured graphs against eager steps, within bf16 rounding.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "core/cache/kv_cache_policy.h"
#include "core/model/decode_steps.h"
#include "core/model/model.h"
#include "experiments/bench_model.h"
#include "quantizers/registry.h"
#include "tests/model/fixtures.h"

namespace {

using json = nlohmann::json;

struct Decoded {
  std::vector<at::Tensor> logits;  // per step, [B, V] on the CPU
  kvx::DecodeSteps::Stats stats;
  int64_t bytes = 0, seen = 0;
  std::map<std::string, int64_t> calls;
};

// A prefill of `prompt` tokens, then `steps` one-token steps of the ids that follow (teacher-forced:
// the same tokens whatever the logits).
Decoded decode(kvx::CausalLM& model, const std::string& shorthand, kvx::StepMode mode, const at::Tensor& ids,
               int64_t prompt) {
  c10::InferenceMode guard;
  auto policy = kvx::make_policy(kvx::resolve_method(kvx::parse_method_shorthand(shorthand)));
  policy->reset(model.info(), ids.size(0));
  kvx::DecodeSteps steps(model, *policy, mode);
  Decoded d;
  (void)steps.forward(ids.narrow(1, 0, prompt), 0);
  for (int64_t t = prompt; t < ids.size(1); ++t)
    d.logits.push_back(steps.forward(ids.narrow(1, t, 1), t).select(1, 0).to(at::kFloat).cpu());
  d.stats = steps.stats();
  d.bytes = policy->memory().device_bytes();
  d.seen = policy->memory().tokens_seen;
  d.calls = policy->paths().kernel_calls;
  return d;
}

double max_rel_diff(const Decoded& a, const Decoded& b) {
  double worst = 0;
  for (size_t i = 0; i < a.logits.size(); ++i)
    worst = std::max(worst, ((a.logits[i] - b.logits[i]).abs().max() / a.logits[i].abs().max()).item<double>());
  return worst;
}

}  // namespace

TEST(DecodeSteps, EmulatedRunsGiveEagerSteps) {
  auto model = kvx::load_model(kvx::test::model_dir("small-code-llama"));
  at::manual_seed(5);
  const int64_t prompt = 40, steps = 100;
  const at::Tensor ids = at::randint(0, model->config().vocab_size, {2, prompt + steps}, at::kLong);
  struct Case {
    std::string method;
    bool plain;  // its decode steps can be plain
  } cases[] = {{"fp16", true},         {"kvq:k4v2", true},          {"kvq:k2cv2:r64", true},
               {"kvq:k4v4:r32", true}, {"selective_int8", true},    {"sink_window", false}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.method);
    const Decoded eager = decode(*model, c.method, kvx::StepMode::Eager, ids, prompt);
    const Decoded emu = decode(*model, c.method, kvx::StepMode::Emulate, ids, prompt);
    EXPECT_EQ(eager.stats.plain, 0) << c.method;
    EXPECT_EQ(eager.stats.eager, steps + 1) << c.method;
    EXPECT_EQ(emu.stats.plain + emu.stats.eager, steps + 1) << c.method;
    if (c.plain) {
      EXPECT_GT(emu.stats.plain, steps / 2) << c.method;
      EXPECT_GE(emu.stats.captures, 1) << c.method;
    } else {
      EXPECT_EQ(emu.stats.plain, 0) << c.method;
    }
    // the residual's flushes end the runs: eager steps between them, a run after each
    if (c.method == "kvq:k4v4:r32") {
      EXPECT_GE(emu.stats.eager, 1 + steps / 32) << c.method;
      EXPECT_GE(emu.stats.captures, steps / 32) << c.method;
    }
    EXPECT_LT(max_rel_diff(eager, emu), 1e-5) << c.method;
    EXPECT_EQ(emu.bytes, eager.bytes) << c.method;
    EXPECT_EQ(emu.seen, eager.seen) << c.method;
    int64_t n_eager = 0, n_emu = 0;
    for (const auto& [path, n] : eager.calls) n_eager += n;
    for (const auto& [path, n] : emu.calls) n_emu += n;
    EXPECT_EQ(n_emu, n_eager) << c.method;
  }
}

// A run is one-token steps at consecutive positions: a chunk runs eagerly and ends it, and the
// next step begins a new run; the cache's own position check still guards what follows.
TEST(DecodeSteps, RunFollowsPositions) {
  auto model = kvx::load_model(kvx::test::model_dir("small-code-llama"));
  c10::InferenceMode guard;
  auto policy = kvx::make_policy(kvx::resolve_method(kvx::parse_method_shorthand("kvq:k4v4")));
  policy->reset(model->info(), 1);
  kvx::DecodeSteps steps(*model, *policy, kvx::StepMode::Emulate);
  const at::Tensor ids = at::randint(0, model->config().vocab_size, {1, 12}, at::kLong);
  (void)steps.forward(ids.narrow(1, 0, 4), 0);
  (void)steps.forward(ids.narrow(1, 4, 1), 4);
  (void)steps.forward(ids.narrow(1, 5, 1), 5);
  EXPECT_EQ(steps.stats().plain, 2);
  EXPECT_EQ(steps.stats().captures, 1);
  (void)steps.forward(ids.narrow(1, 6, 3), 6);  // a chunk: eager
  (void)steps.forward(ids.narrow(1, 9, 1), 9);
  EXPECT_EQ(steps.stats().eager, 2);
  EXPECT_EQ(steps.stats().plain, 3);
  EXPECT_EQ(steps.stats().captures, 2);
  EXPECT_EQ(policy->memory().tokens_seen, 10);
  EXPECT_THROW((void)steps.forward(ids.narrow(1, 10, 1), 3), std::exception);  // the cache holds 10 tokens
  EXPECT_THROW(kvx::DecodeSteps(*model, *policy, kvx::StepMode::Graph), std::exception);  // a CPU model
}

// CUDA: graph-replayed runs against eager steps on a random model at head_dim 128 (bf16): every
// step's logits within bf16 rounding of the eager step's, most steps replayed.
TEST(DecodeSteps, GraphsGiveEagerStepsOnCuda) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  kvx::ModelShape s = kvx::model_shape("tiny");
  auto cfg = kvx::shape_config(s);
  cfg.n_layers = 4;
  auto model = kvx::random_llama(cfg, "cuda", "bfloat16", 7);
  at::manual_seed(9);
  const int64_t prompt = 200, steps = 300;
  const at::Tensor ids = at::randint(0, cfg.vocab_size, {3, prompt + steps}, at::TensorOptions().dtype(at::kLong).device(at::kCUDA));
  for (const char* m : {"fp16", "kvq:k4v4", "kvq:k2cv2:r64", "kvq:k4v2:g32", "selective_int8:s16:w32"}) {
    const Decoded eager = decode(*model, m, kvx::StepMode::Eager, ids, prompt);
    const Decoded graph = decode(*model, m, kvx::StepMode::Graph, ids, prompt);
    EXPECT_GT(graph.stats.plain, steps / 2) << m;
    EXPECT_LT(max_rel_diff(eager, graph), 2e-2) << m;
    EXPECT_EQ(graph.bytes, eager.bytes) << m;
  }
}
