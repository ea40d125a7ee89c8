// Dense attention over what a policy's update() returned (the contract in kv_cache_policy.h): the
// mask from key_pos (causal by absolute position, -1 = always visible, optional sink/window, per-head
// positions), GQA by folding the query groups into the token axis ([B, Hkv, G·n, D], no repeated
// K/V), fp32 softmax probabilities to observe_attention() when the policy asks for them. What every
// policy without a kernel of its own attends with.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

#include "core/cache/kv_cache_policy.h"

namespace kvx {

// q [B, Hq, n, D] (after RoPE), a: the policy's attention inputs for this chunk. Returns
// [B, n, Hq·D]. `impl` receives the path taken: "matmul" (explicit softmax) or "sdpa" (Torch 2.x
// fused kernel, CUDA only). observer: gets the probabilities when it wants_attention() (may be null).
at::Tensor dense_attention(const at::Tensor& q, const AttnInputs& a, int layer, const StepInfo& step,
                           const AttentionOptions& opt, KVCachePolicy* observer, std::string& impl);

// Checks that a policy's attention inputs have the shapes the contract asks for (errors name the
// policy and the layer).
void check_attn_inputs(const AttnInputs& a, const at::Tensor& q, int64_t n_kv_heads, int layer, const std::string& policy);

}  // namespace kvx
