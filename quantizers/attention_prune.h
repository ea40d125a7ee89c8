// `attention_prune`: adaptive attention-guided pruning + online k-means summary
// (docs/methods/attention_prune.md; "ours" in configs/seed003.yaml). Whole-cache policy, fp16
// entries, evicts/merges, never quantizes.
//
// Parameters (registry schema; defaults = the published ones):
//   max_cache_size       B  1024  entries kept after a prune (>= 1)
//   num_clusters         K   256  centroids; clustering only when K < B (pruning-only: K >= B)
//   pruning_interval     P   512  tokens between pruning events (>= 1)
//   lookback_window      Δ   256  most recent query rows whose attention is summed (>= 1)
//   kmeans_learning_rate η  0.01  centroid update rate, (0, 1]
//   kmeans_sequential        false  per-vector (write-up) instead of batch (reference) update
//   seed                       0  RNG seed of the k-means initialization
// Stored: per layer [B, Hkv, n, D] entries in the compute dtype (16 bits counted per element):
//   a head block (survivors of the last prune, or the K centroids with key_pos -1) and the
//   tokens appended since (true positions). Nothing else (centroid state = the head block).
// Scoring: observe_attention adds Σ_{batch, query heads} probs[:, :, j, :] of every layer
//   into query row j's accumulator; end_step pushes the chunk's rows into a ring holding the
//   last Δ rows (older rows dropped; shorter rows zero-padded). I_i = Σ rows.
// When: end_step counts since_prune += n_new (tokens, R); prune iff since_prune >= P and N > B.
// Prune: keep the B largest I (ties -> the more recent entry, i.e. the later cache index;
//   centroids sit first and count as oldest), ascending cache order, same indices in every
//   layer and head (and batch row, R: scores summed over the batch); gather K/V into fresh
//   storage (evicted entries are freed); since_prune = 0; ring cleared. Then, if K < B, k-means
//   (kmeans.h) and the cache becomes the K centroids.
// Positions: cached keys keep their RoPE rotation and true key_pos; new tokens get absolute
//   positions (token count), never the cache length.
// Memory: 16 · 2 · L · B · Hkv · D · N bits, N = entries held (k.kept/k.centroids/k.recent).
// Simplifications: scores are summed over the batch (one selection per batch); distillation
//   (docs/methods/protocols.md) is a separate `kvx train` step, not part of the policy.
#pragma once
#include <cstdint>
#include <vector>

#include "quantizers/registry.h"

namespace kvx {

struct AttentionPruneConfig {
  int64_t max_cache_size = 1024;
  int64_t num_clusters = 256;
  int64_t pruning_interval = 512;
  int64_t lookback_window = 256;
  double learning_rate = 0.01;
  bool sequential = false;
  uint64_t seed = 0;
  bool use_attention = true;           // false: no scores (keeps the most recent B)
  std::vector<int64_t> init_indices;   // tests: fixed k-means init (indices into kept entries)
  std::string name = "attention_prune";
};

std::unique_ptr<KVCachePolicy> make_attention_prune_policy(const AttentionPruneConfig& c);
AttentionPruneConfig attention_prune_config(const nlohmann::json& resolved);
void attention_prune_check(const nlohmann::json& resolved);
MethodTraits attention_prune_traits();

}  // namespace kvx
