#include "experiments/multiple_choice.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cmath>

#include "core/common/error.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "experiments/mc_datasets.h"
#include "experiments/text_windows.h"
#include "quantizers/qaq.h"

namespace kvx {

namespace {

// One candidate: its tokens and its question's (context alone) token count.
struct Candidate {
  std::vector<int32_t> ids;
  int64_t question_tokens = 0;
  bool prefix_ok = true;
};

Candidate make_candidate(const Tokenizer& tok, const std::string& context, const std::string& choice) {
  const std::vector<int32_t> q = tok.encode(context, false);
  Candidate c;
  c.ids = tok.encode(context + " " + choice, false);
  c.question_tokens = int64_t(q.size());
  if (q.empty()) throw error("multiple_choice: the question tokenizes to nothing");
  if (c.ids.size() <= q.size()) throw error("multiple_choice: choice '{}' adds no tokens after its question", choice);
  c.prefix_ok = std::equal(q.begin(), q.end(), c.ids.begin());
  return c;
}

// Two-pass scores of candidates of one shape (question and candidate lengths) fed together, each
// the score it gets alone (score not yet checked for finiteness); question_memory (optional)
// receives policy.memory() after pass 1, for all of them.
std::vector<McChoiceScore> score_candidates(CausalLM& model, KVCachePolicy& policy,
                                            const std::vector<const Candidate*>& cands,
                                            MemoryReport* question_memory) {
  const int64_t B = int64_t(cands.size()), Lq = cands[0]->question_tokens, n = int64_t(cands[0]->ids.size());
  std::vector<const int32_t*> rows;
  for (const Candidate* c : cands) rows.push_back(c->ids.data());
  const at::Tensor ids = ids_rows(rows, n);
  std::vector<double> sum(size_t(B), 0.0);
  policy.reset(model.info(), B);
  feed_rows(model, policy, ids.narrow(1, 0, Lq), 0, 0, [&](int64_t, const at::Tensor& logits) {
    for (int64_t b = 0; b < B; ++b)
      sum[size_t(b)] += at::log_softmax(logits[b][Lq - 1].to(at::kDouble), -1)[rows[size_t(b)][Lq]].item<double>();
  });
  if (question_memory) *question_memory = policy.memory();
  const double paper_bpv = qaq_paper_bpv(policy);
  if (n - Lq > 1) {
    feed_rows(model, policy, ids.narrow(1, Lq, n - Lq - 1), Lq, 0, [&](int64_t, const at::Tensor& logits) {
      const at::Tensor tgt = ids.narrow(1, Lq + 1, n - Lq - 1).to(logits.device());
      for (int64_t b = 0; b < B; ++b) {
        at::Tensor lp = at::log_softmax(logits[b].to(at::kDouble), -1);  // [n-Lq-1, V]
        sum[size_t(b)] += lp.gather(1, tgt[b].unsqueeze(1)).sum().item<double>();
      }
    });
  }
  std::vector<McChoiceScore> out(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    McChoiceScore& s = out[size_t(b)];
    s.prefix_ok = cands[size_t(b)]->prefix_ok;
    s.choice_tokens = n - Lq;
    s.question_paper_bpv = paper_bpv;
    s.score = sum[size_t(b)] / double(s.choice_tokens);
  }
  return out;
}

}  // namespace

McChoiceScore score_choice(CausalLM& model, const Tokenizer& tok, KVCachePolicy& policy, const std::string& context,
                           const std::string& choice, MemoryReport* question_memory) {
  const Candidate c = make_candidate(tok, context, choice);
  McChoiceScore s = score_candidates(model, policy, {&c}, question_memory)[0];
  require_finite(s.score, "choice log-likelihood");
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
  // Every (question, choice) candidate, scored `batch` at a time among candidates of one shape
  // (each gets the score it gets alone), then each question's argmax in question order.
  std::vector<Candidate> cands;
  std::vector<std::pair<size_t, size_t>> where;  // (index into pick, choice)
  std::vector<std::array<int64_t, 2>> shapes;
  int64_t longest = 0;
  for (size_t qi = 0; qi < pick.size(); ++qi) {
    const McQuestion& q = all[pick[qi]];
    for (size_t i = 0; i < q.choices.size(); ++i) {
      try {
        cands.push_back(make_candidate(*jm.tokenizer, q.context, q.choices[i]));
      } catch (const Error& e) {
        throw error("{}: choice {}: {}", q.where, i, e.what());
      }
      where.emplace_back(qi, i);
      shapes.push_back({cands.back().question_tokens, int64_t(cands.back().ids.size())});
      longest = std::max(longest, shapes.back()[1]);
    }
  }
  JobBatch jb = job_batch(job.at("method"), protocol_batch(P, *jm.model, longest, longest));
  std::vector<McChoiceScore> scores(cands.size());
  std::vector<MemoryReport> mems(cands.size());
  std::vector<int64_t> rows_of(cands.size());
  size_t done = 0;
  for (const auto& rows : same_shape_batches(shapes, jb.size)) {
    check_cancel(ctx, double(done) / double(cands.size()));
    std::vector<const Candidate*> batch;
    for (size_t r : rows) batch.push_back(&cands[r]);
    MemoryReport mem;
    const auto got = score_candidates(*jm.model, *policy, batch, &mem);
    jb.ran(int64_t(rows.size()));
    for (size_t r = 0; r < rows.size(); ++r) {
      const McQuestion& q = all[pick[where[rows[r]].first]];
      if (!std::isfinite(got[r].score))
        throw error("{}: choice {}: choice log-likelihood is not finite ({})", q.where, where[rows[r]].second, got[r].score);
      scores[rows[r]] = got[r];
      mems[rows[r]] = mem;
      rows_of[rows[r]] = int64_t(rows.size());
    }
    done += rows.size();
  }
  int64_t correct = 0, mismatches = 0, choice_tokens = 0;
  const int64_t candidates = int64_t(cands.size());
  double bpv_sum = 0, paper_sum = 0, bytes_max = 0;
  int64_t paper_n = 0;
  std::vector<double> best_score(pick.size(), -INFINITY);
  std::vector<int> best(pick.size(), -1);
  for (size_t c = 0; c < cands.size(); ++c) {
    const McChoiceScore& s = scores[c];
    const size_t qi = where[c].first;
    if (s.score > best_score[qi]) best_score[qi] = s.score, best[qi] = int(where[c].second);
    mismatches += !s.prefix_ok;
    choice_tokens += s.choice_tokens;
    bpv_sum += mems[c].bpv(jm.model->info(), rows_of[c]);
    bytes_max = std::max(bytes_max, double(mems[c].device_bytes() / rows_of[c]));
    const double pb = s.question_paper_bpv;
    if (std::isfinite(pb)) paper_sum += pb, ++paper_n;
  }
  for (size_t qi = 0; qi < pick.size(); ++qi) correct += best[qi] == all[pick[qi]].label;
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
  jb.write(m);
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
      kBatchParam,
  };
  t.run = run_multiple_choice;
  return t;
}

}  // namespace kvx
