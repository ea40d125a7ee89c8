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

void expect_same_at_batch(const nlohmann::json& protocol, const std::vector<const char*>& metrics) {
  for (const auto& [name, method] : every_method()) {
    SCOPED_TRACE(name);
    nlohmann::json p1 = protocol, p4 = protocol;
    p1["batch"] = 1;
    p4["batch"] = 4;
    const nlohmann::json m1 = run_job(test::make_job("small-code-llama", p1, method, test::wikitext()), test::context());
    const nlohmann::json m4 = run_job(test::make_job("small-code-llama", p4, method, test::wikitext()), test::context());
    for (const char* k : metrics) EXPECT_EQ(m4.at(k), m1.at(k)) << k;
    EXPECT_EQ(m4["batch"].get<int64_t>(), method_batches(method) ? 4 : 1);
    EXPECT_EQ(m4.contains("batch_note"), !method_batches(method));
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

}  // namespace
}  // namespace kvx
