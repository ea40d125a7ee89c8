// `kmeans_cluster`: the online k-means summary of docs/methods/attention_prune.md, and the math the
// attention_prune policy uses for it.
//
// Resolved algorithm (docs/methods/attention_prune.md, "Online k-means"; resolutions marked R):
//   State per (layer, KV head) (R: upstream shares one set over all layers and heads):
//   key centroids mu [K, D] and value summaries nu [K, D], created once, at the first prune that
//   clusters, from K distinct kept entries chosen at random (seeded std::mt19937_64, partial
//   Fisher-Yates; R: the same draw serves every layer and head, the kept indices are shared).
//   On each prune, with the kept keys k_i and values v_i (cache order):
//     batch form (default, reference code):  c_i = argmin_c ||k_i - mu_c||^2 (ties: lowest c);
//        for every cluster with members  mu_c <- (1-eta) mu_c + eta * mean_{c_i=c} k_i,
//                                        nu_c <- (1-eta) nu_c + eta * mean_{c_i=c} v_i
//     sequential form (kmeans_sequential: true, the write-up): for i in cache order,
//        c_i = argmin over the *current* mu; mu_c <- (1-eta) mu_c + eta k_i; nu_c likewise.
//   The cache is then replaced by the K centroids (key_pos = -1: visible to every query; keys
//   of centroids are averages of RoPE-rotated keys and are not re-rotated; no count-based logit
//   correction, faithful). Centroids persist across prunes (online). Arithmetic in fp32, stored
//   in the compute dtype; the stored centroids are the cache entries (no second copy).
//   Memory: 16 bits per element of the K centroids (k.centroids, v.centroids) plus kept tokens.
// `kmeans_cluster` in the registry is the attention_prune policy with clustering required on
// (num_clusters < max_cache_size); parameters as attention_prune (see attention_prune.h).
//
// Worked example (docs/methods/attention_prune.md, tests/eviction): kept k0=(1,0) k2=(0.8,0.2) k5=(0,1),
// v0=(1,0) v2=(0,1) v5=(2,2), init mu=(k0,k2): batch eta=0.5 -> mu1=(0.6,0.4) nu1=(0.5,1.25);
// eta=0.01 -> mu1=(0.796,0.204); sequential eta=0.5 -> mu1=(0.4,0.6) nu1=(1,1.5);
// sequential eta=0.01 -> mu1=(0.792,0.208) nu1=(0.02,1.01).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "quantizers/registry.h"

namespace kvx {

// mu, nu [B, H, K, D] (any float dtype; replaced by updated tensors of the same dtype);
// keys, vals [B, H, n, D]. Returns the assignment [B, H, n] (int64).
at::Tensor kmeans_update(at::Tensor& mu, at::Tensor& nu, const at::Tensor& keys, const at::Tensor& vals, double eta,
                         bool sequential);
// K distinct indices in [0, n), seeded (deterministic across platforms).
std::vector<int64_t> kmeans_init_indices(int64_t n, int64_t K, uint64_t seed);

MethodTraits kmeans_cluster_traits();

}  // namespace kvx
