// `razor`: RazorAttention (Tang et al. 2024, arXiv 2407.15891), a baseline (docs/methods/baselines.md).
//
// Paper: a few "retrieval" heads (echo + induction heads) attend across the whole context and
// keep their full cache; every other head keeps only the attention sinks and a recent window,
// and folds the tokens it drops into one "compensation token" {k̂, v̂} = mean of the dropped
// keys / values. Heads are chosen once, before inference (the paper scores them with a
// data-free repeated-random-token probe; 15% of heads in its main setting).
// kvx resolution (engine: head_budget.h):
//   - Identification R: kvx policies never see token ids, so the echo/induction probe cannot
//     run inside a policy; instead a (layer, KV head) is scored on the prompt (the first
//     `prompt_len` tokens) by its long-range attention mass: the share of the window score
//     (last obs_window queries, Σ over its query heads) that falls on entries that are neither
//     sinks (pos < sink_size) nor among the newest window_size entries. The
//     ceil(retrieval_fraction · L · Hkv) heads with the largest mass (ties: lower layer/head)
//     are retrieval heads and keep everything. SIMPLIFICATION (shown in `kvx list`).
//   - Other heads: keep positions < sink_size and the newest window_size entries; every dropped
//     entry enters the compensation entry (running mean, key_pos -1, visible to all queries).
//     R: no logit correction for the number of merged tokens (plain mean entry).
//   - Before prompt_len tokens nothing is dropped (the prompt is held in full, as in the paper's
//     prefill); after that, dropping happens after every step.
// Parameters: retrieval_fraction 0.15 (0..1), sink_size 4, window_size 64, prompt_len 128,
//   obs_window 32.
// Memory: held K/V entries at 16 bits (retrieval heads: all; others: sinks + window) plus one
//   compensation entry per compressed head (2·D·16 bits + 32-bit count).
// Worked example (tests/eviction): 2 layers x 1 KV head, sink 1, window 1, fraction 0.5,
//   prompt_len 4; window scores layer 0 = (0.1, 0.8, 0.05, 0.05), layer 1 = (0.6, 0.1, 0.1, 0.2):
//   long-range mass (entries 1, 2) = 0.85 vs 0.2 -> layer 0 is the retrieval head (keeps 4);
//   layer 1 keeps positions 0 and 3 and the compensation entry = mean of keys 1 and 2.
#pragma once
#include "quantizers/head_budget.h"
#include "quantizers/registry.h"

namespace kvx {

BudgetRule razor_rule(double retrieval_fraction);
MethodTraits razor_traits();

}  // namespace kvx
