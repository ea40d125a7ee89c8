// Measured comparison on small-code-llama (opt-in: KVX_SLOW=1; KVX_QAQ_DEVICE=cuda to use a GPU;
// KVX_QAQ_GRID=full|small). Runs the perplexity protocol (WikiText-2 test, seq_len 512, chunk 32,
// streaming QAQ) for fp16, uniform KVQ and QAQ (uniform and adaptive, window 1 vs 5), prints one
// markdown table of ppl / bpv / paper_bpv per method, the lower envelope (Pareto front) of
// ppl vs bpv per family, and writes JSON lines to $KVX_QAQ_OUT when set. It checks only that
// every job ran; the numbers are for the report (docs in the QAQ note).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "experiments/model_cache.h"
#include "experiments/protocol.h"
#include "quantizers/registry.h"

using namespace kvx;

namespace {
std::string src(const std::string& rel) {
  const char* env = std::getenv("KVX_SOURCE_DIR");
  return std::string(env && *env ? env : KVX_SOURCE_DIR) + "/" + rel;
}
struct Row {
  std::string family, label;
  double ppl, bpv, paper_bpv;
  nlohmann::json method;
};
}  // namespace

TEST(QaqCompare, SmallCodeLlamaPerplexityEnvelope) {
  if (!std::getenv("KVX_SLOW")) GTEST_SKIP() << "set KVX_SLOW=1";
  const char* dev = std::getenv("KVX_QAQ_DEVICE");
  const char* grid = std::getenv("KVX_QAQ_GRID");
  const bool full = grid && std::string(grid) == "full";
  const bool tiny = grid && (std::string(grid) == "tiny" || std::string(grid) == "extra");  // a dozen jobs: the note's CPU table
  auto cache = make_model_cache();
  JobContext ctx;
  ctx.models = cache.get();
  ctx.device = dev ? dev : "cpu";
  nlohmann::json base;
  base["model"] = {{"path", src("data/models/small-code-llama")}};
  base["dataset"] = {{"path", src("data/wikitext-2/test.txt")}};
  base["protocol"] = resolve_protocol({{"name", "perplexity"}, {"seq_len", 512}, {"chunk", 32},
                                       {"max_windows", full ? 4 : tiny ? 1 : 2}});
  std::vector<std::pair<std::string, nlohmann::json>> methods;
  methods.push_back({"fp16", {{"key", "none"}, {"value", "none"}}});
  for (auto kv : tiny ? std::vector<std::pair<int, int>>{{4, 4}, {4, 2}, {2, 2}}
                      : std::vector<std::pair<int, int>>{{8, 8}, {4, 4}, {4, 2}, {2, 4}, {2, 2}})
    methods.push_back({"kvq", {{"key", {{"type", "kvq"}, {"bits", kv.first}}}, {"value", {{"type", "kvq"}, {"bits", kv.second}}}}});
  auto qaq = [](nlohmann::json p) {
    nlohmann::json k = p, v = p;
    k["type"] = v["type"] = "qaq";
    return nlohmann::json{{"key", k}, {"value", v}};
  };
  for (int b : {1, 2, 3, 4})
    for (double r : {0.0, 0.01})
      if (!tiny || (r > 0 && b <= 2)) methods.push_back({"qaq-uniform", qaq({{"use_attentions", false}, {"n_bits_uniform", b}, {"outliers_ratio", r}})});
  const std::vector<std::string> levels = full ? std::vector<std::string>{"head", "token"} : std::vector<std::string>{"head"};
  const std::vector<std::pair<int, int>> minmax =
      full ? std::vector<std::pair<int, int>>{{0, 2}, {0, 3}, {0, 4}, {1, 2}, {1, 3}, {1, 4}, {2, 2}, {2, 3}, {2, 4}}
           : std::vector<std::pair<int, int>>{{0, 4}, {1, 4}, {1, 3}, {2, 4}};
  for (const auto& level : levels)
    for (double r : {0.0, 0.01})
      for (int w : {1, 5})
        for (double tau : {1.0, 3.0, 10.0, 30.0})
          for (auto mm : minmax) {
            if (!full && r == 0.0 && w == 1) continue;
            if (tiny && (r == 0.0 || mm != std::pair<int, int>{1, 4} || tau == 3.0)) continue;
            methods.push_back({"qaq-" + level + "-w" + std::to_string(w) + (r > 0 ? "" : "-r0"),
                               qaq({{"level", level}, {"outliers_ratio", r}, {"last_n_attentions", w},
                                    {"target_quantization_error", tau}, {"n_bits_min", mm.first}, {"n_bits_max", mm.second}})});
          }
  if (grid && std::string(grid) == "extra") {  // below the upstream targets and with 2-bit floor
    methods.resize(1);
    for (auto [tau, lo] : std::vector<std::pair<double, int>>{{0.1, 1}, {0.3, 1}, {1.0, 2}, {10.0, 2}})
      methods.push_back({"qaq-head-w5-extra", qaq({{"last_n_attentions", 5}, {"target_quantization_error", tau},
                                                   {"n_bits_min", lo}, {"n_bits_max", 4}})});
  }
  std::vector<Row> rows;
  std::ofstream out;
  if (const char* o = std::getenv("KVX_QAQ_OUT")) out.open(o);
  for (const auto& [family, spec] : methods) {
    nlohmann::json job = base;
    job["method"] = resolve_method(spec);
    nlohmann::json m;
    ASSERT_NO_THROW(m = run_job(job, ctx)) << job["method"].dump();
    Row r{family, method_label(job["method"]), m["ppl"].get<double>(), m["bpv"].get<double>(),
          m.value("paper_bpv", std::nan("")), job["method"]};
    rows.push_back(r);
    std::printf("| %s | %s | %.4f | %.3f |\n", family.c_str(), r.label.c_str(), r.ppl, r.bpv);
    std::fflush(stdout);
    if (out) out << nlohmann::json{{"family", family}, {"label", r.label}, {"metrics", m}, {"method", job["method"]}}.dump() << "\n";
  }
  // Lower envelope per family: sorted by bpv, keep points whose ppl beats every cheaper point.
  std::vector<std::string> fams;
  for (const auto& r : rows)
    if (std::find(fams.begin(), fams.end(), r.family) == fams.end()) fams.push_back(r.family);
  std::printf("\n## Pareto fronts (ppl vs bpv)\n");
  for (const auto& f : fams) {
    std::vector<Row> fr;
    for (const auto& r : rows)
      if (r.family == f) fr.push_back(r);
    std::sort(fr.begin(), fr.end(), [](const Row& a, const Row& b) { return a.bpv < b.bpv; });
    double best = 1e300;
    std::printf("### %s\n| bpv | ppl | label |\n|---|---|---|\n", f.c_str());
    for (const auto& r : fr)
      if (r.ppl < best) {
        best = r.ppl;
        std::printf("| %.3f | %.4f | %s |\n", r.bpv, r.ppl, r.label.c_str());
      }
  }
}
