// `zack`: ZACK dimensionality compression of the KV cache (Zhang & Shen 2024, "Zero-overhead
// LLM inference acceleration via dimensionality compression of the KV cache"), a
// baseline (docs/methods/baselines.md).
//
// Paper core: per layer and head, keys and values are projected onto a low-rank basis obtained
// by PCA/SVD of calibration activations; the cache stores the r-dimensional coefficients and
// attention runs in the reduced space (queries projected onto the key basis, the attention
// output lifted back through the value basis).
// kvx resolution:
//   - Calibration R: the basis is fitted on the sequence's own prompt — the first fit_tokens
//     tokens — when tokens_seen first reaches fit_tokens (documented resolution; no separate
//     calibration set). Per (layer, KV head), separately for K and V: X = the held rows
//     [B·n, D] (post-RoPE keys), uncentered SVD X = U S Wᵀ, basis P = first r columns of W
//     (r = max(1, round(rank_fraction · D))). All held tokens are then replaced by their
//     coefficients c = x P; later tokens are projected after their own chunk's attention
//     (the chunk itself is always attended in full precision).
//   - Attention R: realized by reconstructing x̃ = c Pᵀ before the model's attention; the
//     result equals attention in the reduced space (q·x̃ = (qP)·c; Σ_i a_i ṽ_i = (Σ_i a_i c_i) Pᵀ).
//   - Simplification: one rank for every head (the paper adapts the rank per head); fp16
//     coefficients (no further quantization).
// Parameters: rank_fraction 0.5 (0 < f <= 1), fit_tokens 128.
// Memory: before the fit, 16 bits per K/V element; after it, 16·r bits per token, head and K/V
//   (k.coeffs, v.coeffs) plus the bases 16·D·r per layer, head and K/V (k.basis, v.basis),
//   counted as device memory of the sequence.
// Worked example (tests/eviction): D 2, rank 1, fit keys (3,4), (6,8) -> basis ±(0.6, 0.8),
//   coefficients ±5, ±10; a later key (4,3) -> coefficient ±4.8 -> reconstructed (2.88, 3.84).
#pragma once
#include "quantizers/registry.h"

namespace kvx {

std::unique_ptr<KVCachePolicy> make_zack_policy(double rank_fraction, int64_t fit_tokens);
MethodTraits zack_traits();

}  // namespace kvx
