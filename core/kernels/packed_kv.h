// The packed KV layout the fused attention kernels read, and the kernels over it: quantize-and-pack
// into place, dequantize a token range, and fused attention that reads packed codes, dequantizes in
// registers and computes softmax(q·Kᵀ)·V with split-K over the context (flash-decoding), for one
// decode step or for a chunk of new tokens over a packed history.
//
// Layout (affine min-max groups, docs/methods/kvq.md):
//   codes  int32 [B, H, T, D·bits/32]: token-major; channel c of token t in word c / (32/bits) of
//          row t, at the bit packed_layout.h gives: the key layout (channel pairs share a bit of the
//          two half-words) or the value layout (tokens 2u and 2u + 1 swap half-words, an odd last
//          token stays plain).
//   per-channel groups (axis channel): scale/min fp16 [B, H, ceil(T/G), D]; G consecutive tokens of
//          one channel share them (the last group may be shorter).
//   per-token groups (axis token): scale/min fp16 [B, H, D/G, T] (group-major: the attention kernel
//          reads a token pair's statistics of one group as one word); G consecutive channels of one
//          token share them (G clamps to D).
// Codes: q = clamp(round_half_even((x - min)/s), 0, 2^b-1), s = (max-min)/(2^b-1), statistics in
// fp32, s == 0 -> q = 0; dequantized x̂ = q·s + min with s and min as stored (fp16).
//
// A block may be a token range [0, T) of larger capacity buffers (rows contiguous, the token axis
// strided): the kernels read it in place. Every function has a plain CPU reference
// (packed_kv_ref.cpp); tensors on CUDA take the CUDA kernels (packed_kv_cuda.cu) when kvx was built
// with them, otherwise a clear error.
#pragma once
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <string>
#include <utility>
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
  bool per_channel = false;  // statistics per channel over G tokens (else per token over G channels)
  bool key_layout = false;   // codes in the key layout (else the value layout)
  int64_t tokens() const { return codes.defined() ? codes.size(2) : 0; }
  int64_t bytes() const;  // codes + scales + mins of the T tokens
};

// Zeroed tensors of a block of T tokens of this configuration on `device` (also capacity buffers
// for pack_into). bits ∈ {2, 4, 8}; D·bits must be a multiple of 32; per-token groups must divide
// D; values (key_layout false) need per-token groups.
PackedBlock empty_block(int64_t B, int64_t H, int64_t T, int64_t D, int bits, int group, bool per_channel, bool key_layout,
                        at::Device device);
// x: [B, H, T, D] float/half/bf16, quantized as a block of the configuration above.
PackedBlock quantize_pack(const at::Tensor& x, int bits, int group, bool per_channel, bool key_layout);
// Quantizes x ([B, H, n, D]) into tokens [t0, t0 + n) of `dst`, whose tensors are capacity buffers
// (codes [B, H, cap, W]; statistics for cap tokens) with `dst`'s configuration; the block then holds
// t0 + n tokens. Per-channel groups start at t0, which must be a multiple of the group. With the
// value layout and an odd t0 the previous last token joins its pair (its half-words move).
void pack_into(const at::Tensor& x, const PackedBlock& dst, int64_t t0);
// Tokens [t0, t1) of b (t1 = -1: all) as [B, H, t1 - t0, D] in `dtype`.
at::Tensor dequantize(const PackedBlock& b, at::ScalarType dtype, int64_t t0 = 0, int64_t t1 = -1);

// A full-precision segment of an attention call: keys and values [B, Hkv, R, D] (float16 or
// bfloat16 on CUDA, rows contiguous; a token range of a larger buffer is fine). R = 0 or undefined:
// absent.
//
// Graph-replayed decode (core/model/decode_steps.h) replays one captured step at every step of a
// run, so a segment that grows or slides from step to step reads where it lies at run time, from
// the step counter d (int64 on the tensors' device: the steps of the run done so far): at step d it
// starts off_rate·d tokens after its tensors' first token and holds tokens() + len_rate·d tokens.
// Its tensors describe step 0 and lie in buffers that hold the run's last step (its policy reserved
// them). step == nullptr: the tensors are the segment.
struct StepGrowth {
  const int64_t* step = nullptr;
  int64_t off_rate = 0, len_rate = 0;
  int64_t steps = 1;  // the run's steps
  // The most tokens over the run's steps, from `tokens` at step 0.
  int64_t max_tokens(int64_t tokens) const { return step ? tokens + std::max<int64_t>(0, len_rate * (steps - 1)) : tokens; }
};
// The token range [t0 + off_rate·d, + tokens + len_rate·d) of x ([B, H, T, D] or [B, H, T]: a view of
// its buffer, which must hold the range) at the counter's value d, read on the host: CPU counters
// (the references' segments).
at::Tensor at_step(const at::Tensor& x, const StepGrowth& g);

struct FpSegment {
  FpSegment() = default;
  FpSegment(at::Tensor k_, at::Tensor v_, StepGrowth g = {}) : k(std::move(k_)), v(std::move(v_)), grow(g) {}
  at::Tensor k, v;
  StepGrowth grow;
  int64_t tokens() const { return k.defined() ? k.size(2) : 0; }
  int64_t max_tokens() const { return grow.max_tokens(tokens()); }
  FpSegment at_step() const { return grow.step ? FpSegment{kernels::at_step(k, grow), kernels::at_step(v, grow)} : *this; }
};

// Attention of the queries of n consecutive new tokens over a cache [sink | packed body | tail]:
//   q [B, Hq, n, D], Hq a multiple of Hkv (query head h uses KV head h / (Hq/Hkv)); n = 1 is a
//   decode step. Every token of sink and body is visible to every query; the last n tokens of
//   `tail` are the queries' own keys and values: query i sees tail tokens up to R - n + i (causal).
//   k, v: the packed body (nullptr, or no tokens: none). Returns [B, Hq, n, D] fp32.
// On CUDA this is the fused kernel (when packed_attention_unsupported says nothing); on CPU the
// reference (dequantize, then fp32 attention).
at::Tensor packed_attention(const at::Tensor& q, const PackedBlock* k, const PackedBlock* v, const FpSegment& sink,
                            const FpSegment& tail, double scale);
// Why the fused CUDA kernel cannot take a body of this configuration ("" when it can): head_dim,
// layouts, groups. Only the configuration of k and v is read (their tensors may be undefined).
std::string packed_attention_unsupported(const PackedBlock& k, const PackedBlock& v, int64_t head_dim);
// Full-precision attention with the fused kernel's tiles: `tail` is the whole cache, its last n
// tokens the queries' own (as in packed_attention). [B, Hq, n, D] fp32.
at::Tensor dense_attention(const at::Tensor& q, const FpSegment& sink, const FpSegment& tail, double scale);

// Which path the attention functions take for queries on q's device: "fused" or "cpu_reference".
const char* attention_path(const at::Tensor& q);

namespace ref {
PackedBlock quantize_pack(const at::Tensor& x, int bits, int group, bool per_channel, bool key_layout);
void pack_into(const at::Tensor& x, const PackedBlock& dst, int64_t t0);
at::Tensor dequantize(const PackedBlock& b, at::ScalarType dtype, int64_t t0 = 0, int64_t t1 = -1);
at::Tensor packed_attention(const at::Tensor& q, const PackedBlock* k, const PackedBlock* v, const FpSegment& sink,
                            const FpSegment& tail, double scale);
// Plain fp32 attention of q [B, Hq, n, D] over the cache parts ks/vs ([B, Hkv, T_i, D]) concatenated
// along tokens, the last n tokens causal as in packed_attention: what every reference computes once
// it has dequantized. `who` names the caller in errors.
at::Tensor attend_parts(const at::Tensor& q, const std::vector<at::Tensor>& ks, const std::vector<at::Tensor>& vs,
                        double scale, const char* who);
}  // namespace ref

#ifdef KVX_WITH_CUDA
namespace cuda {
void pack_into(const at::Tensor& x, const PackedBlock& dst, int64_t t0);
at::Tensor dequantize(const PackedBlock& b, at::ScalarType dtype, int64_t t0, int64_t t1);
at::Tensor packed_attention(const at::Tensor& q, const PackedBlock* k, const PackedBlock* v, const FpSegment& sink,
                            const FpSegment& tail, double scale);
}  // namespace cuda
#endif

}  // namespace kvx::kernels
