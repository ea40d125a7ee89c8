// `dynamic_kv`: DynamicKV (Zhou et al. 2024, arXiv 2412.14838), a baseline (docs/methods/baselines.md).
//
// Paper: task-aware per-layer token budgets. During prefill, each layer scores the prompt's
// tokens by the attention of the last window of queries; the layers' budgets are set from how
// the globally most important tokens distribute over layers (within a global budget), and each
// layer keeps its top tokens by accumulated window attention plus the recent window.
// kvx resolution (engine: head_budget.h):
//   - The prompt R: the first `prompt_len` tokens are held in full; at that point, with window
//     scores s_{l,h,i} (Σ attention of the last obs_window queries, over the query heads of the
//     KV head), each (layer, head) distribution is normalized to sum 1, the candidates (entries
//     neither sinks nor among the newest window_size) of all layers enter one global ranking, and
//     the top  G = L·Hkv·(budget − sink − window)  candidates are counted per layer:
//     budget_l = sink + window + floor(count_l / Hkv); every head of layer l gets budget_l.
//     R (simplification): budgets are decided once (the paper re-balances every m layers during
//     prefill; kvx has no separate prefill).
//   - After that, after every step, each head keeps sinks + window + its highest-scoring
//     entries up to budget_l (SnapKV-style, per head; ties -> more recent).
// Parameters: budget 128 (average entries per layer and KV head), sink_size 4, window_size 32,
//   prompt_len 128, obs_window 32.
// Memory: held K/V entries at 16 bits; mean held per (layer, head) ≈ budget.
// Worked example (tests/eviction): 2 layers x 1 head, sink 0, window 1, budget 3, prompt_len 5;
//   window scores (sum 1): layer 0 = (0.9, 0.02, 0.02, 0.02, 0.04), layer 1 = (0.3, 0.25, 0.2,
//   0.15, 0.1). Candidates exclude the newest entry; G = 2·(3−0−1) = 4 global picks: 0.9 (l0),
//   0.3, 0.25, 0.2 (l1) -> budgets l0 = 1+1 = 2, l1 = 1+3 = 4; layer 0 keeps positions 0, 4 and
//   layer 1 keeps 0, 1, 2, 4.
#pragma once
#include "quantizers/head_budget.h"
#include "quantizers/registry.h"

namespace kvx {

BudgetRule dynamic_kv_rule(int64_t budget);
MethodTraits dynamic_kv_traits();

}  // namespace kvx
