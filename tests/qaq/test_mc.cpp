// multiple_choice protocol and its dataset adapters. Expected strings and indices come from
// Python (lm-eval's HellaSwag preprocess, its MathQA regex, random.seed(42); random.sample),
// run once by hand and typed in here.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "core/common/error.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "experiments/mc_datasets.h"
#include "experiments/model_cache.h"
#include "experiments/multiple_choice.h"
#include "experiments/protocol.h"
#include "experiments/text_windows.h"
#include "quantizers/qaq.h"
#include "quantizers/registry.h"
#include "tests/protocols/test_support.h"

using namespace kvx;

namespace {
std::string src(const std::string& rel) {
  const char* env = std::getenv("KVX_SOURCE_DIR");
  return std::string(env && *env ? env : KVX_SOURCE_DIR) + "/" + rel;
}
std::string tmp_file(const std::string& name, const std::string& text) {
  const std::string p = ::testing::TempDir() + name;
  std::ofstream(p) << text;
  return p;
}
}  // namespace

TEST(McDatasets, PythonSampleMatchesCPython) {
  EXPECT_EQ(python_sample(10, 5, 42), (std::vector<int64_t>{1, 0, 4, 9, 6}));
  EXPECT_EQ(python_sample(3, 3, 42), (std::vector<int64_t>{2, 0, 1}));
  // set-based branch (n > setsize)
  EXPECT_EQ(python_sample(10042, 8, 42), (std::vector<int64_t>{1824, 409, 4506, 4012, 3657, 2286, 1679, 8935}));
  auto s = python_sample(1838, 1000, 42);  // PIQA validation size, pool branch
  EXPECT_EQ(std::vector<int64_t>(s.begin(), s.begin() + 10),
            (std::vector<int64_t>{1309, 228, 51, 1518, 563, 501, 457, 285, 1508, 209}));
}

TEST(McDatasets, HellaSwagCleaningAndCapitalize) {
  EXPECT_EQ(python_capitalize("SHE"), "She");
  EXPECT_EQ(python_capitalize("then she"), "Then she");
  EXPECT_EQ(python_capitalize(""), "");
  auto q = load_mc_dataset(src("data/mc/hellaswag_mini.jsonl"), "auto");
  ASSERT_EQ(q.size(), 6u);
  EXPECT_EQ(q[0].context, "Making a sandwich: A man takes two slices of bread out of a bag. He");
  EXPECT_EQ(q[1].context, "Washing dishes: A woman fills the sink with warm water and soap. She");
  EXPECT_EQ(q[1].label, 0);
  EXPECT_EQ(q[2].context, "Home and Garden: How to plant a tree. Dig a hole twice as wide as the root ball.");
  EXPECT_EQ(q[2].choices[0], " Place the tree in the hole and fill it with soil.");
  EXPECT_EQ(q[2].choices[3], " Fill the hole with marbles.");
  EXPECT_EQ(q[4].context, "Writing code: A programmer opens an editor and writes a function that adds two numbers. Then she");
  EXPECT_EQ(q[5].label, 3);
  EXPECT_EQ(q[5].choices.size(), 4u);
}

TEST(McDatasets, PiqaWithLabelsFile) {
  auto q = load_mc_dataset(src("data/mc/piqa_mini.jsonl"), "auto");
  ASSERT_EQ(q.size(), 8u);
  EXPECT_EQ(q[1].context, "Question: How do I make a cup of tea?\nAnswer:");
  EXPECT_EQ(q[2].label, 1);
  EXPECT_EQ(q[2].choices[1], "stuff them with newspaper and leave them in a warm, airy room.");
  const auto bad = tmp_file("piqa_bad-labels.lst", "0\n");
  EXPECT_THROW(load_mc_dataset(src("data/mc/piqa_mini.jsonl"), "piqa", bad), Error);
}

TEST(McDatasets, MathQaOptionsStringAndList) {
  EXPECT_EQ(parse_mathqa_options("a ) 90 km / h , b ) 30 km / h , c ) 40 km / h , d ) 61.5 km / h , e ) 45 km / h"),
            (std::vector<std::string>{"90 km / h", "30 km / h", "40 km / h", "61.5 km / h", "45 km / h"}));
  auto q = load_mc_dataset(src("data/mc/mathqa_mini.json"), "auto");
  ASSERT_EQ(q.size(), 5u);
  EXPECT_EQ(q[0].choices, (std::vector<std::string>{"42", "32", "18", "360", "none of these"}));
  EXPECT_EQ(q[1].label, 2);
  EXPECT_EQ(q[3].choices[3], "21 m ^ 2");
  EXPECT_EQ(q[3].label, 3);
  EXPECT_EQ(q[4].label, 4);
  EXPECT_EQ(q[0].context, "Question: what is 12 plus 30 ?\nAnswer:");
}

TEST(McDatasets, ErrorsNameFileAndLine) {
  const auto p = tmp_file("hellaswag_broken.jsonl", "{\"activity_label\": \"x\", \"ctx_a\": \"a\", \"endings\": [\"e\"], \"label\": 0}\n");
  try {
    load_mc_dataset(p, "auto");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("hellaswag_broken.jsonl:1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("ctx_b"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_mc_dataset(tmp_file("questions.jsonl", "{}\n"), "auto"), Error);  // format unknown
  EXPECT_THROW(load_mc_dataset(tmp_file("mathqa_bad.json", "[{\"Problem\": \"p\", \"options\": \"a ) 1 , b ) 2\", \"correct\": \"a\"}]"), "auto"), Error);
}

TEST(McDatasets, ConfidenceInterval) {
  EXPECT_NEAR(mc_ci95(0.75, 1000), 1.96 * std::sqrt(0.75 * 0.25 / 1000), 1e-15);
  EXPECT_EQ(mc_ci95(1.0, 10), 0.0);
}

// Full precision: the two-pass score equals the log-likelihood of one plain forward pass.
TEST(MultipleChoice, TwoPassScoreEqualsSinglePassInFullPrecision) {
  auto model = load_model(src("data/models/small-code-llama"));
  auto tok = Tokenizer::load(src("data/models/small-code-llama/tokenizer.json"));
  const std::string ctx = "Question: How do I make a cup of tea?\nAnswer:";
  const std::string choice = "Put a tea bag in a cup and pour boiling water over it.";
  auto policy = make_full_precision_policy();
  McChoiceScore s = score_choice(*model, tok, *policy, ctx, choice);
  auto c = tok.encode(ctx + " " + choice, false);
  const int64_t Lq = int64_t(tok.encode(ctx, false).size());
  auto ref = make_full_precision_policy();
  ref->reset(model->info(), 1);
  at::Tensor logits = model->forward(ids_tensor(c.data(), int64_t(c.size())), 0, *ref)[0].to(at::kDouble);
  at::Tensor lp = at::log_softmax(logits, -1);
  double sum = 0;
  for (int64_t j = Lq; j < int64_t(c.size()); ++j) sum += lp[j - 1][c[j]].item<double>();
  EXPECT_TRUE(s.prefix_ok);
  EXPECT_EQ(s.choice_tokens, int64_t(c.size()) - Lq);
  EXPECT_NEAR(s.score, sum / double(c.size() - Lq), 1e-4);
}

TEST(MultipleChoice, ProtocolRunsQaqOneShotOnHandMadePiqa) {
  auto cache = make_model_cache();
  JobContext ctx;
  ctx.models = cache.get();
  nlohmann::json job;
  job["model"] = {{"path", src("data/models/small-code-llama")}};
  job["dataset"] = {{"path", src("data/mc/piqa_mini.jsonl")}};
  job["protocol"] = resolve_protocol({{"name", "multiple_choice"}, {"n_questions", 2}});
  job["method"] = resolve_method({{"key", {{"type", "qaq"}, {"target_quantization_error", 10.0}}},
                                  {"value", {{"type", "qaq"}, {"target_quantization_error", 10.0}}},
                                  {"policy", {{"type", "qaq_cache"}, {"schedule", "one_shot"}}}});
  auto m = run_job(job, ctx);
  EXPECT_EQ(m["n_questions"], 2);
  EXPECT_GE(m["accuracy"].get<double>(), 0.0);
  EXPECT_LE(m["accuracy"].get<double>(), 1.0);
  EXPECT_LT(m["bpv"].get<double>(), 8.0);  // the question cache is quantized (max 4 bits + metadata)
  EXPECT_GT(m["paper_compression_ratio"].get<double>(), 16.0 / 6.5);  // at most 4 bits + stats
  // full precision on the same questions: bpv 16, no paper_bpv
  job["method"] = resolve_method({{"key", "none"}, {"value", "none"}});
  auto f = run_job(job, ctx);
  EXPECT_DOUBLE_EQ(f["bpv"].get<double>(), 16.0);
  EXPECT_FALSE(f.contains("paper_bpv"));
}

// q_norm: auto through the real model: the attention layers hand their queries to the policy,
// which calibrates on the window's first chunk. Running again with q_norm fixed at the reported
// calibrated value must reproduce the perplexity exactly (auto ≡ that number), and the number
// must be a plausible ‖q/√D‖² (not the literal 300, not a default).
TEST(QaqAuto, PerplexityCalibratesQNormFromTheModelsQueries) {
  const nlohmann::json protocol = {{"name", "perplexity"}, {"seq_len", 96}, {"chunk", 32}, {"max_windows", 1}};
  auto with_q_norm = [&](const nlohmann::json& qn) {
    const nlohmann::json method = {{"key", {{"type", "qaq"}, {"q_norm", qn}, {"target_quantization_error", 3.0}}},
                                   {"value", {{"type", "qaq"}}}};
    return run_job(test::make_job("small-code-llama", protocol, method, test::wikitext()), test::context());
  };
  const auto a = with_q_norm("auto");
  ASSERT_TRUE(a.contains("q_norm"));
  const double qn = a["q_norm"].get<double>();
  EXPECT_GT(qn, 0.0);
  EXPECT_NE(qn, 300.0);
  const auto f = with_q_norm(qn);
  EXPECT_DOUBLE_EQ(f["q_norm"].get<double>(), qn);
  EXPECT_DOUBLE_EQ(f["ppl"].get<double>(), a["ppl"].get<double>());
  EXPECT_DOUBLE_EQ(f["bpv"].get<double>(), a["bpv"].get<double>());
}
