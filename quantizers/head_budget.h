// Shared engine of the per-head budgeted eviction baselines (docs/methods/baselines.md):
// `dynamic_kv`, `razor`, `uncomp`. Each baseline's own file documents its resolved algorithm
// and supplies the budget rule; this engine does the storage, scoring and eviction.
//
//   Storage: per (layer, KV head) its own entries (ragged: heads may hold different counts),
//     [B, n_h, D] keys and values in the compute dtype, their true positions, and optionally
//     one compensation entry (razor) = running mean of every entry that head dropped
//     (key_pos -1, always visible). Attention gets them padded to the longest head as
//     [B, Hkv, N, D] with AttnInputs::head_pos (-2 on padding: masked); the padded view is
//     transient, memory() counts only the entries really held.
//   Scores: for every entry, Σ of the attention probabilities it received from the last
//     `obs_window` query rows (summed over the query heads of its group and the batch; R: the
//     same window rule SnapKV/DynamicKV/UNComp apply to the prompt, kept sliding afterwards).
//   The prompt (R): the policy keeps everything until tokens_seen >= prompt_len; at that
//     end_step the budget rule decides per (layer, head) budgets from the observed scores and
//     keys; then, after that and every later step, a head holding more than its budget keeps
//     its `sink` first positions, its `recent` newest entries and the highest-scoring others
//     (ties -> more recent) up to the budget; the rest is freed (or merged into the
//     compensation entry). Budgets below sink + recent are raised to sink + recent.
//   Memory: 16 bits per held K/V element, the compensation entries included (plus a 32-bit
//     count each); scores live in host memory (offload, not in bpv).
#pragma once
#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include <functional>
#include <string>
#include <vector>

#include "core/cache/kv_cache_policy.h"
#include "quantizers/registry.h"

namespace kvx {

struct BudgetStats {
  int64_t n = 0;                                   // tokens held per head at decision time (= seen)
  int64_t sink = 0, recent = 0;
  std::vector<std::vector<at::Tensor>> scores;     // [L][Hkv] -> [n] double: window attention scores
  std::vector<std::vector<at::Tensor>> keys;       // [L][Hkv] -> [B, n, D] keys (compute dtype)
};
// budgets[l][h]: entries to keep (compensation entry excluded); -1 = keep everything.
using BudgetRule = std::function<std::vector<std::vector<int64_t>>(const BudgetStats&)>;

struct HeadBudgetConfig {
  std::string name;
  int64_t sink = 4;
  int64_t recent = 32;
  int64_t obs_window = 32;
  int64_t prompt_len = 128;
  bool compensation = false;
  BudgetRule decide;
};

std::unique_ptr<KVCachePolicy> make_head_budget_policy(HeadBudgetConfig c);
// The fields every head-budget method's schema shares: sink_size, window_size, prompt_len,
// obs_window of the resolved `policy` component.
HeadBudgetConfig head_budget_config(const std::string& name, const nlohmann::json& policy);
// The traits every head-budget method shares: a 16-bit policy fed the attention probabilities,
// schema = the method's own rows, then sink_size, window_size (default `window`), prompt_len
// and obs_window. The caller sets check, make_policy and label.
MethodTraits head_budget_traits(const char* name, const char* summary, std::vector<ParamSpec> own, int64_t window);
// Table label: "<head> s<sink_size> w<window_size>".
std::string head_budget_label(const std::string& head, const nlohmann::json& resolved);

}  // namespace kvx
