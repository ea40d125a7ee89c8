// `uncomp`: UNComp (Xiong et al. 2024, arXiv 2410.03090), a baseline (docs/methods/baselines.md).
//
// Paper: estimate each layer's / head's uncertainty by the (truncated) matrix entropy of its
// representations over the prompt tokens, group layers and heads by it, and give low-entropy
// (low-information, more compressible) groups smaller KV budgets; tokens are then chosen by the
// attention of the last window of prompt queries within each budget (SnapKV-style).
// kvx resolution (engine: head_budget.h):
//   - Matrix entropy per (layer, KV head) on the prompt (first prompt_len tokens) of the keys
//     (R: keys, post-RoPE, of all batch rows stacked; the paper also uses hidden states):
//     Σ = Kᵀ K / n  (D x D), eigenvalues λ ≥ 0 sorted descending, truncated to the top
//     `rank` (0 = all), p_i = λ_i / Σ λ, H = −Σ p_i ln p_i (0·ln 0 = 0).
//   - Budgets R (simplification: proportional allocation instead of the paper's discrete
//     groups): b_{l,h} = round(budget · L·Hkv · e^{H_{l,h}} / Σ e^{H}), i.e. proportional to the
//     effective rank, mean = budget; clamped to ≥ sink + window by the engine.
//   - After that, after every step, each head keeps sinks + window + its highest window-score
//     entries up to its budget (ties -> more recent); dropped entries are freed.
// Parameters: budget 128 (mean entries per layer and KV head), rank 0, sink_size 4,
//   window_size 32, prompt_len 128, obs_window 32.
// Memory: held K/V entries at 16 bits (ragged per head, no padding counted).
// Worked example (tests/eviction): 1 layer x 2 KV heads, D 2, budget 3: head 0 keys
//   {(1,0), (−1,0)} -> Σ = diag(1,0), H = 0, e^H = 1; head 1 keys {(1,0), (0,1)} ->
//   Σ = diag(.5,.5), H = ln 2, e^H = 2 -> budgets 6·1/3 = 2 and 6·2/3 = 4.
#pragma once
#include "quantizers/head_budget.h"
#include "quantizers/registry.h"

namespace kvx {

double matrix_entropy(const at::Tensor& keys /*[B, n, D]*/, int64_t rank);
BudgetRule uncomp_rule(int64_t budget, int64_t rank);
MethodTraits uncomp_traits();

}  // namespace kvx
