// `h2o`: Heavy-Hitter Oracle eviction (Zhang et al. 2023; docs/methods/baselines.md, "h2o").
//
// Resolved algorithm (docs/methods/baselines.md, "h2o"):
//   Per (layer, KV head) every held entry has a cumulative score = Σ of the attention
//   probabilities it received from every query so far, summed over the query heads of its GQA
//   group (and over the batch, R: one selection per batch). After each step (end_step), if a
//   head holds more than heavy + recent entries: keep its `recent` newest entries plus the
//   `heavy` highest-scoring older ones (ties -> the more recent), evict the rest for good
//   (fresh storage, freed). New entries start at score 0 and first receive the attention of
//   their own chunk. Heads of a layer keep different positions, so attention uses the
//   per-KV-head positions AttnInputs::head_pos (key_pos carries head 0's). Keys keep their
//   RoPE rotation and true positions.
// Parameters: heavy >= 0 (default 64), recent >= 1 (default 64).
// Memory: 16 bits per held K/V element (every head holds the same count, no padding); the
//   scores live in host memory, reported as offload (32 bits per head and entry), not in bpv.
// Worked example (tests/eviction): one head, heavy 1, recent 1, 3 tokens fed one at a time
//   with attention rows [1], [0.6, 0.4], [0.5, 0.2, 0.3]: scores after step 3 = (2.1, 0.6, 0.3)
//   -> keep positions 0 (heavy) and 2 (recent), evict 1.
#pragma once
#include "quantizers/registry.h"

namespace kvx {

std::unique_ptr<KVCachePolicy> make_h2o_policy(int64_t heavy, int64_t recent);
MethodTraits h2o_traits();

}  // namespace kvx
