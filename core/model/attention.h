// Attention over what a KV-cache policy returns (contract in core/cache/kv_cache_policy.h):
// update() the cache with the chunk's keys/values, build the mask from key_pos (causal by
// absolute position, -1 = always visible, optional sink/window), attend with GQA by folding the
// query groups into the token axis ([B, Hkv, G*T, D], no repeated K/V), hand fp32 softmax
// probabilities to observe_attention() when the policy asks for them.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

#include "core/cache/kv_cache_policy.h"

namespace kvx {

struct AttentionOptions {
  double scale = 0;              // softmax scale (1/sqrt(D) unless the model says otherwise)
  int64_t model_window = -1;     // Mistral-style model sliding window; -1 = none
};

// q [B, Hq, T, D], k_new / v_new [B, Hkv, T, D] (keys after RoPE), compute dtype.
// Returns [B, T, Hq*D]. `impl` receives the path taken: "matmul" or "sdpa".
at::Tensor cached_attention(const at::Tensor& q, const at::Tensor& k_new, const at::Tensor& v_new, int layer,
                            const StepInfo& step, KVCachePolicy& cache, const AttentionOptions& opt,
                            std::string& impl);

}  // namespace kvx
