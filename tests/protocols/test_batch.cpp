// Batched protocols (experiments/text_windows.h, `batch`): every registered method gives the same
// numbers at batch 4 as at batch 1 on the CPU in float32, ragged last batches and overlapping
// windows (whose first window scores from another position) included; methods that keep state
// across sequences run at batch 1 and say so in the row.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "quantizers/registry.h"
#include "tests/protocols/test_support.h"

namespace kvx {
namespace {

// One resolved spec per row of the method table, at its defaults: a codec in both slots; a policy
// with its default codecs, or with the first codec it accepts in both slots.
std::vector<std::pair<std::string, nlohmann::json>> every_method() {
  std::vector<std::pair<std::string, nlohmann::json>> out;
  for (const auto& t : method_table()) {
    std::vector<nlohmann::json> tries;
    if (t.kind == ComponentKind::Codec) {
      tries.push_back({{"key", t.name}, {"value", t.name}});
    } else {
      tries.push_back({{"policy", {{"type", t.name}}}});
      for (const auto& c : method_table())
        if (c.kind == ComponentKind::Codec) tries.push_back({{"key", c.name}, {"value", c.name}, {"policy", {{"type", t.name}}}});
    }
    bool resolved = false;
    for (const auto& spec : tries) {
      try {
        out.emplace_back(t.name, resolve_method(spec));
        resolved = true;
        break;
      } catch (const ParamError&) {
      }
    }
    if (!resolved) ADD_FAILURE() << t.name << ": no spec at its defaults resolves";
  }
  return out;
}

void expect_same_at_batch(const nlohmann::json& protocol, const std::vector<const char*>& metrics,
                          const std::string& dataset = test::wikitext()) {
  for (const auto& [name, method] : every_method()) {
    SCOPED_TRACE(name);
    nlohmann::json p1 = protocol, p4 = protocol;
    p1["batch"] = 1;
    p4["batch"] = 4;
    const nlohmann::json m1 = run_job(test::make_job("small-code-llama", p1, method, dataset), test::context());
    const nlohmann::json m4 = run_job(test::make_job("small-code-llama", p4, method, dataset), test::context());
    for (const char* k : metrics) EXPECT_EQ(m4.at(k), m1.at(k)) << k;
    EXPECT_EQ(m4["batch"].get<int64_t>(), method_batches(method) ? 4 : 1);
    EXPECT_EQ(m4.contains("batch_note"), !method_batches(method));
    // sequences really went through together (some of a shape share a batch)
    if (method_batches(method)) EXPECT_GT(m4["batch_mean"].get<double>(), 1.0);
    EXPECT_EQ(m1["batch_mean"].get<double>(), 1.0);
  }
}

TEST(Batch, PerplexityWindowsAsAlone) {
  // 5 windows: a batch of 4 and a ragged batch of 1
  expect_same_at_batch({{"name", "perplexity"}, {"seq_len", 40}, {"chunk", 16}, {"max_windows", 5}},
                       {"ppl", "nll", "tokens_scored", "kv_bytes", "kv_bytes_max", "bpv", "retained_fraction"});
}

TEST(Batch, PerplexityOverlappingWindowsAsAlone) {
  // the first window scores from position 1, the others from the stride's end: rows apart
  expect_same_at_batch({{"name", "perplexity"}, {"seq_len", 32}, {"stride", 16}, {"chunk", 8}, {"max_windows", 3}},
                       {"ppl", "nll", "tokens_scored"});
}

TEST(Batch, KlDivergenceWindowsAsAlone) {
  expect_same_at_batch({{"name", "kl_divergence"}, {"seq_len", 32}, {"chunk", 8}, {"max_windows", 5}},
                       {"kl_mean", "top1_agreement", "ppl", "ppl_ref", "tokens_scored", "kv_bytes_max", "bpv"});
}

// Documents of unequal length (JSONL records, truncated to seq_len) batch with those of their length.
TEST(Batch, LongPplDocumentsAsAlone) {
  expect_same_at_batch({{"name", "long_ppl"}, {"seq_len", 40}, {"chunk", 16}, {"bucket", 8}, {"max_docs", 5}},
                       {"ppl", "ppl_8_16", "ppl_32_40", "tokens_scored", "kv_bytes_max", "bpv"});
  std::string records;
  for (const char* t : {"def add(a, b):\\n    return a + b", "The cat sat on the mat and looked out of the window.",
                        "for i in range(10):\\n    print(i * i)", "import os\\nimport sys\\nprint(sys.argv)",
                        "A short one.", "class Point:\\n    def __init__(self, x, y):\\n        self.x = x"})
    records += std::string("{\"text\": \"") + t + "\"}\n";
  expect_same_at_batch({{"name", "long_ppl"}, {"seq_len", 16}, {"chunk", 4}, {"bucket", 4}, {"max_docs", 0},
                        {"documents", "records"}, {"prompt_field", "text"}},
                       {"ppl", "tokens_scored", "documents", "kv_bytes_max"}, test::write_temp("docs.jsonl", records));
}

// Keys of different token counts make prompts of different answer lengths: batches of one shape.
TEST(Batch, PasskeyTrialsAsAlone) {
  expect_same_at_batch({{"name", "passkey"}, {"length", 72}, {"trials", 6}, {"chunk", 16}},
                       {"accuracy", "correct", "sample", "kv_bytes_max", "bpv", "needle_pos_mean"});
}

TEST(Batch, GenerationPromptsAsAlone) {
  expect_same_at_batch({{"name", "generation"}, {"prompt_len", 24}, {"new_tokens", 6}, {"max_prompts", 5}, {"chunk", 8},
                        {"stop_at_eos", false}},
                       {"rouge_l_fp16", "token_agreement", "exact_match_fp16", "divergence_pos_mean", "sample",
                        "kv_bytes_max", "kv_bytes_mean", "bpv"});
}

// Candidates of one (question, candidate) length across questions batch together.
TEST(Batch, MultipleChoiceCandidatesAsAlone) {
  expect_same_at_batch({{"name", "multiple_choice"}, {"n_questions", 0}},
                       {"accuracy", "n_correct", "mean_choice_tokens", "bpv", "kv_bytes_max"},
                       test::source_dir() + "/data/mc/hellaswag_mini.jsonl");
}

}  // namespace
}  // namespace kvx
