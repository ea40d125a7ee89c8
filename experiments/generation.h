// generation protocol: greedy continuation of prompts with the method's cache, compared with
// the full-precision cache's continuation of the same prompts (computed on the same model in
// the same job) and, where the dataset has them, with references.
//
// Prompts: JSONL records (dataset_adapter.h), prompts longer than prompt_len keep their first
// and last halves (LongBench convention); or, for plain text, consecutive spans of the token
// stream: prompt_len tokens of prompt, the next new_tokens tokens as the reference.
// Metrics: rouge_l_fp16 (ROUGE-L F1 over token ids vs the fp16 continuation), token_agreement,
// exact_match_fp16, divergence_pos_mean (first differing position); rouge_l_ref and
// rouge_l_ref_fp16 (max F1 over references) when references exist; prefill_tok_s and
// decode_tok_s of the method (and fp16_*); kv_bytes_max (peak KV bytes), bpv; with `profile: true`, per-phase
// times prof_* (timed_policy.h: prefill and decode, each split into time inside the cache policy
// = storage and attention, the rest of the layers = projections/MLP, and the rest).
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <vector>

#include "core/model/decode_steps.h"

#include "experiments/protocol.h"
#include "experiments/timed_policy.h"

namespace kvx {

class CausalLM;

struct GreedyOptions {
  int64_t new_tokens = 32;
  int64_t prefill_chunk = 0;  // <= 0: the whole prompt in one forward call
  int32_t eos = -1;           // stop after generating it (not included in tokens); -1 = never
};

struct GreedyOutput {
  std::vector<int32_t> tokens;  // generated ids
  double prefill_s = 0, decode_s = 0;
  int64_t prefill_tokens = 0, decode_steps = 0;  // the first new token comes from the prefill
  // Device bytes of the cache after the prefill and after every decode step, averaged (the
  // memory a budgeted cache really holds over the generation; sampled outside the timers).
  double kv_bytes_mean = 0;
  StepMode step_mode = StepMode::Eager;  // how the decode steps ran (core/model/decode_steps.h)
  DecodeSteps::Stats steps;
};

// Resets the policy, prefills the prompt and decodes greedily (argmax, ties to the lowest id). The
// ids stay on the model's device and feed the next step directly; the host reads them at the end
// (and, with an EOS, every 16 steps: steps computed past an EOS count in decode_steps, their ids
// are dropped).
GreedyOutput greedy_generate(CausalLM& model, KVCachePolicy& policy, const std::vector<int32_t>& prompt,
                             const GreedyOptions& opt);
// Greedy outputs of every prompt (opts: one per prompt), in prompt order, decoded `batch` at a
// time among prompts of one length and new_tokens (same_shape_batches: each row's tokens are the
// ones it gets alone). A row's times, bytes and step counts are its share of its batch's (the
// forward-call counts `steps` go to a batch's first row), so sums over prompts give rates.
// progress(fraction done) runs before each batch; after_batch(rows) after it, while the policy
// still holds the batch's sequences.
std::vector<GreedyOutput> greedy_generate_all(CausalLM& model, KVCachePolicy& policy,
                                              const std::vector<const std::vector<int32_t>*>& prompts,
                                              const std::vector<GreedyOptions>& opts, int64_t batch,
                                              const std::function<void(double)>& progress,
                                              const std::function<void(int64_t rows)>& after_batch);

// Keeps the first and last halves of a prompt longer than max_tokens.
std::vector<int32_t> truncate_middle(const std::vector<int32_t>& ids, int64_t max_tokens);

ProtocolTraits generation_protocol();
nlohmann::json run_generation(const nlohmann::json& job, JobContext& ctx);

}  // namespace kvx
