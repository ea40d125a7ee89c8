// GPU-friendly packed KV layout and the kernels over it (issue "GPU speed"): quantize-and-pack
// on append, dequantize, and fused decode attention that reads packed codes, dequantizes in
// registers and computes softmax(q·Kᵀ)·V with split-K over the context (flash-decoding).
//
// Layout ("KIVI" layout, ALGORITHMS.md 1.5.1 / 4.3 math):
//   codes  int32 [B, H, T, D·bits/32]: token-major; channel c of token t in word c / (32/bits) of
//          row t, at the bit packed_layout.h gives (keys: channel pairs share a bit of the two
//          half-words; values: tokens 2u and 2u + 1 swap half-words, an odd last token stays plain).
//   per-channel groups (keys, axis -1): scale/min fp16 [B, H, ceil(T/G), D]; G consecutive
//          tokens of one channel share them; T must be a multiple of G when appending.
//   per-token groups (values, axis 0): scale/min fp16 [B, H, D/G, T] (group-major: the attention
//          kernel reads a token pair's statistics of one group as one word); G consecutive channels
//          of one token share them (G clamps to D). A block of an odd token count cannot be extended.
// Codes: q = clamp(round_half_even((x - min)/s), 0, 2^b-1), s = (max-min)/(2^b-1), statistics in
// fp32, s == 0 -> q = 0; dequantized x̂ = q·s + min with s and min as stored (fp16).
//
// Every function has a plain CPU reference (packed_kv_ref.cpp); tensors on CUDA take the CUDA
// kernels (packed_kv_cuda.cu) when kvx was built with them, otherwise a clear error.
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

namespace kvx::kernels {

// Bytes a tensor holds (0 when undefined): the memory figures of the cache layouts below.
int64_t tensor_bytes(const at::Tensor& t);

struct PackedBlock {
  at::Tensor codes;  // int32 [B, H, T, W]
  at::Tensor scale;  // fp16, see layout above
  at::Tensor minv;   // fp16
  int bits = 4;
  int group = 64;
  bool per_channel = false;
  int64_t tokens() const { return codes.defined() ? codes.size(2) : 0; }
  int64_t bytes() const;  // codes + scales + mins actually held
};

// x: [B, H, T, D] float/half/bf16. bits ∈ {2, 4, 8}; D·bits must be a multiple of 32.
PackedBlock quantize_pack(const at::Tensor& x, int bits, int group, bool per_channel);
// Back to [B, H, T, D] in `dtype`.
at::Tensor dequantize(const PackedBlock& b, at::ScalarType dtype);
// Concatenate two blocks of the same configuration along tokens (append on flush).
PackedBlock concat(const PackedBlock& a, const PackedBlock& b);

// One decode step of attention for every query head:
//   q [B, Hq, D]; packed keys/values [B, Hkv, Tq, ...]; full-precision tail k_res/v_res
//   [B, Hkv, R, D] (R may be 0; undefined tensors mean R = 0). Hq must be a multiple of Hkv
//   (GQA: query head h uses KV head h / (Hq/Hkv)). Returns [B, Hq, D] fp32.
// On CUDA this is the fused kernel (D = 128); on CPU the reference (dequantize, then attend).
at::Tensor decode_attention(const at::Tensor& q, const PackedBlock& k, const PackedBlock& v,
                            const at::Tensor& k_res, const at::Tensor& v_res, double scale);

// Which path decode_attention takes for these inputs: "fused" or "cpu".
const char* decode_attention_path(const at::Tensor& q);

namespace ref {
PackedBlock quantize_pack(const at::Tensor& x, int bits, int group, bool per_channel);
at::Tensor dequantize(const PackedBlock& b, at::ScalarType dtype);
at::Tensor decode_attention(const at::Tensor& q, const PackedBlock& k, const PackedBlock& v,
                            const at::Tensor& k_res, const at::Tensor& v_res, double scale);
// Plain fp32 attention of q [B, Hq, D] over the cache parts ks/vs ([B, Hkv, T_i, D], CPU fp32)
// concatenated along tokens: what every decode reference computes once it has dequantized.
// `who` names the caller in errors.
at::Tensor attend_parts(const at::Tensor& q, const std::vector<at::Tensor>& ks, const std::vector<at::Tensor>& vs,
                        double scale, const char* who);
}  // namespace ref

#ifdef KVX_WITH_CUDA
namespace cuda {
PackedBlock quantize_pack(const at::Tensor& x, int bits, int group, bool per_channel);
at::Tensor dequantize(const PackedBlock& b, at::ScalarType dtype);
at::Tensor decode_attention(const at::Tensor& q, const PackedBlock& k, const PackedBlock& v,
                            const at::Tensor& k_res, const at::Tensor& v_res, double scale);
// Full-precision K/V alone ([B, Hkv, T, D] fp16/bf16) with the fused kernel's full-precision tiles
// (tensor cores, split-K): a cache still within its residual, HIGGS after dequantization, and the
// fp16 baseline of `kvx bench decode` measured with the same code.
at::Tensor decode_attention_dense(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  double scale);
}  // namespace cuda
#endif

}  // namespace kvx::kernels
