// multiple_choice protocol: zero-shot multiple-choice accuracy as QAQ's upstream evaluates it
// (docs/methods/protocols.md, "multiple_choice"), for PIQA, HellaSwag and MathQA files
// (experiments/mc_datasets.h).
//
// Per question and choice i: candidate = context + " " + choice_i, tokenized without special
// tokens; Lq = token length of the context alone (the candidate's first Lq tokens are taken as
// the question, as upstream; mismatching prefixes are counted in `prefix_mismatches`).
//   pass 1: a fresh cache policy, the question (candidate[:Lq]) prefilled in one forward call
//           (its own attention in full precision; a policy such as qaq one_shot quantizes the
//           question at that step's end);
//   pass 2: candidate[Lq:-1] in one call at positions Lq.. against the compressed question cache.
//   score_i = [log p(cand[Lq]) from pass 1 at position Lq-1 + sum log p(cand[j]) from pass 2] /
//             (number of choice tokens).
// Prediction = argmax (ties -> lowest index); accuracy with 95% interval 1.96·sqrt(p(1-p)/N).
// Questions: a Python-identical random.seed(seed); random.sample(range(N), n_questions) subset
// (n_questions 0 or >= N: all, in file order).
// Memory metrics are measured on the question cache right after pass 1 (what the method
// compressed): mean bpv / compression_ratio over candidates, paper_bpv for qaq.
#pragma once
#include <nlohmann/json.hpp>

#include <string>

#include "experiments/protocol.h"

namespace kvx {

class CausalLM;
class Tokenizer;
class KVCachePolicy;
struct MemoryReport;

struct McChoiceScore {
  double score = 0;          // length-normalised log-likelihood
  int64_t choice_tokens = 0;
  bool prefix_ok = true;     // the context's tokens are a prefix of the candidate's
  double question_paper_bpv = 0;  // qaq_paper_bpv after pass 1 (NaN for non-QAQ policies)
};

// Two-pass score of one choice; question_memory (optional) receives policy.memory() after pass 1.
McChoiceScore score_choice(CausalLM& model, const Tokenizer& tok, KVCachePolicy& policy, const std::string& context,
                           const std::string& choice, MemoryReport* question_memory = nullptr);

double mc_ci95(double accuracy, int64_t n);

ProtocolTraits multiple_choice_protocol();
nlohmann::json run_multiple_choice(const nlohmann::json& job, JobContext& ctx);

}  // namespace kvx
