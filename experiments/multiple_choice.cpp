#include "experiments/multiple_choice.h"

#include <ATen/ATen.h>

#include <cmath>

#include "core/common/error.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "experiments/mc_datasets.h"
#include "experiments/text_windows.h"
#include "quantizers/qaq.h"

namespace kvx {

McChoiceScore score_choice(CausalLM& model, const Tokenizer& tok, KVCachePolicy& policy, const std::string& context,
                           const std::string& choice, MemoryReport* question_memory) {
  const std::vector<int32_t> q = tok.encode(context, false);
  const std::vector<int32_t> c = tok.encode(context + " " + choice, false);
  const int64_t Lq = int64_t(q.size()), n = int64_t(c.size());
  if (Lq == 0) throw error("multiple_choice: the question tokenizes to nothing");
  if (n <= Lq) throw error("multiple_choice: choice '{}' adds no tokens after its question", choice);
  McChoiceScore s;
  s.prefix_ok = std::equal(q.begin(), q.end(), c.begin());
  s.choice_tokens = n - Lq;
  double sum = 0;
  feed_chunks(model, policy, c.data(), Lq, 0, [&](int64_t, const at::Tensor& logits) {
    sum += at::log_softmax(logits[Lq - 1].to(at::kDouble), -1)[c[Lq]].item<double>();
  });
  if (question_memory) *question_memory = policy.memory();
  s.question_paper_bpv = qaq_paper_bpv(policy);
  if (n - Lq > 1) {
    feed_more(model, policy, c.data() + Lq, n - Lq - 1, Lq, 0, [&](int64_t, const at::Tensor& logits) {
      at::Tensor lp = at::log_softmax(logits.to(at::kDouble), -1);  // [n-Lq-1, V]
      at::Tensor tgt = at::empty({n - Lq - 1, 1}, at::kLong);
      int64_t* t = tgt.data_ptr<int64_t>();
      for (int64_t j = 0; j < n - Lq - 1; ++j) t[j] = c[Lq + 1 + j];
      sum += lp.gather(1, tgt.to(lp.device())).sum().item<double>();
    });
  }
  s.score = require_finite(sum / double(s.choice_tokens), "choice log-likelihood");
  return s;
}

double mc_ci95(double p, int64_t n) { return n > 0 ? 1.96 * std::sqrt(p * (1 - p) / double(n)) : 0.0; }

nlohmann::json run_multiple_choice(const nlohmann::json& job, JobContext& ctx) {
  const auto& P = job.at("protocol");
  const std::string path = job.at("dataset").at("path").get<std::string>();
  const auto all = load_mc_dataset(path, pstr(P, "format"), pstr(P, "labels"));
  const int64_t want = pint(P, "n_questions");
  std::vector<int64_t> pick;
  if (want <= 0 || want >= int64_t(all.size())) {
    for (int64_t i = 0; i < int64_t(all.size()); ++i) pick.push_back(i);
  } else {
    pick = python_sample(int64_t(all.size()), want, uint32_t(pint(P, "seed")));
  }
  JobModel jm = job_model(job, ctx);
  auto policy = make_policy(job.at("method"));
  int64_t correct = 0, mismatches = 0, candidates = 0, choice_tokens = 0;
  double bpv_sum = 0, paper_sum = 0, bytes_max = 0;
  int64_t paper_n = 0;
  for (size_t qi = 0; qi < pick.size(); ++qi) {
    check_cancel(ctx, double(qi) / double(pick.size()));
    const McQuestion& q = all[pick[qi]];
    int best = -1;
    double best_score = -INFINITY;
    for (size_t i = 0; i < q.choices.size(); ++i) {
      MemoryReport mem;
      McChoiceScore s;
      try {
        s = score_choice(*jm.model, *jm.tokenizer, *policy, q.context, q.choices[i], &mem);
      } catch (const Error& e) {
        throw error("{}: choice {}: {}", q.where, i, e.what());
      }
      if (s.score > best_score) best_score = s.score, best = int(i);
      ++candidates;
      mismatches += !s.prefix_ok;
      choice_tokens += s.choice_tokens;
      bpv_sum += mem.bpv(jm.model->info(), 1);
      bytes_max = std::max(bytes_max, double(mem.device_bytes()));
      const double pb = s.question_paper_bpv;
      if (std::isfinite(pb)) paper_sum += pb, ++paper_n;
    }
    correct += best == q.label;
  }
  check_cancel(ctx, 1.0);
  const int64_t N = int64_t(pick.size());
  const double acc = double(correct) / double(N);
  nlohmann::json m;
  m["accuracy"] = acc;
  m["accuracy_ci95"] = mc_ci95(acc, N);
  m["n_questions"] = N;
  m["n_correct"] = correct;
  m["prefix_mismatches"] = mismatches;
  m["mean_choice_tokens"] = double(choice_tokens) / double(candidates);
  const double bpv = bpv_sum / double(candidates);
  m["bpv"] = bpv;
  m["compression_ratio"] = bpv > 0 ? 16.0 / bpv : 0.0;
  m["kv_bytes_max"] = int64_t(bytes_max);
  if (paper_n > 0) {
    m["paper_bpv"] = paper_sum / double(paper_n);
    m["paper_compression_ratio"] = 16.0 / (paper_sum / double(paper_n));
  }
  write_paths(m, policy->paths());
  return m;
}

ProtocolTraits multiple_choice_protocol() {
  ProtocolTraits t;
  t.name = "multiple_choice";
  t.summary = "zero-shot multiple-choice accuracy (PIQA / HellaSwag / MathQA), QAQ's two-pass protocol";
  t.params = {
      {"format", ParamType::Enum, "auto", -1e300, 1e300, {"auto", "piqa", "hellaswag", "mathqa"},
       "dataset file format (auto: from the file name)"},
      {"labels", ParamType::String, "", -1e300, 1e300, {}, "PIQA labels file ('' = <stem>-labels.lst)"},
      {"n_questions", ParamType::Int, 1000, 0, 1 << 30, {}, "questions sampled (0 = all)"},
      {"seed", ParamType::Int, 42, 0, 4294967295.0, {}, "Python random.seed of the question sample"},
  };
  t.run = run_multiple_choice;
  return t;
}

}  // namespace kvx
