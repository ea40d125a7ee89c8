// CUDA kernels of packed_kv.h (the attention kernel itself: packed_attention.cuh). The CPU
// reference (packed_kv_ref.cpp) defines the numbers; the tests in tests/kernels compare the two per
// bit width, group size, GQA ratio, chunk length and odd length.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>

#include "core/common/error.h"
#include "core/kernels/packed_attention.cuh"
#include "core/kernels/packed_kv.h"
#include "core/kernels/packed_layout.h"
#include "core/kernels/split_launch.cuh"

namespace kvx::kernels::cuda {
namespace {

constexpr unsigned kFull = kFullMask;

// OR of the shifted codes of `cpw` consecutive lanes (one 32-bit word).
__device__ __forceinline__ uint32_t word_or(uint32_t w, int cpw) {
  for (int o = 1; o < cpw; o <<= 1) w |= __shfl_xor_sync(kFull, w, o);
  return w;
}
__device__ __forceinline__ uint32_t code_of(float x, float lo, float s, int bits) {
  if (s == 0.f) return 0u;
  float q = rintf((x - lo) / s);  // round half to even, as the reference's nearbyint
  q = fminf(fmaxf(q, 0.f), float((1 << bits) - 1));
  return uint32_t(q);
}

// Where pack kernels write and dequantize reads: a block's tensors by their strides (elements).
// Codes [B, H, rows, W] with contiguous rows; statistics [B, H, i, j] with j contiguous.
struct BlockRef {
  uint32_t* codes;
  int64_t c_b, c_h;
  int W;
  __half* sc;
  __half* mn;
  int64_t s_b, s_h, s_i;
};
BlockRef block_ref(const PackedBlock& b) {
  return {reinterpret_cast<uint32_t*>(b.codes.data_ptr<int32_t>()), b.codes.stride(0), b.codes.stride(1),
          int(b.codes.size(3)), reinterpret_cast<__half*>(b.scale.data_ptr<at::Half>()),
          reinterpret_cast<__half*>(b.minv.data_ptr<at::Half>()), b.scale.stride(0), b.scale.stride(1), b.scale.stride(2)};
}

// ---------------------------------------------------------------- quantize and pack into place
// Per-channel groups: block = one group of (up to) G tokens of one (b, h); thread = channel. Local
// token 0 of x is token t0 of the block (t0 a multiple of G).
template <typename T>
__global__ void pack_per_channel_kernel(const T* __restrict__ x, int64_t n, int D, int G, int bits, int64_t t0,
                                        BlockRef dst) {
  const int d = threadIdx.x, H = gridDim.y;
  const int64_t tl0 = int64_t(blockIdx.x) * G, b = blockIdx.z, h = blockIdx.y;
  const int count = int(min(int64_t(G), n - tl0));
  const T* xb = x + ((b * H + h) * n + tl0) * D + d;
  float lo = to_f(xb[0]), hi = lo;
  for (int t = 1; t < count; ++t) {
    float v = to_f(xb[int64_t(t) * D]);
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
  const float s = (hi - lo) / float((1 << bits) - 1);
  const int64_t mi = b * dst.s_b + h * dst.s_h + (t0 + tl0) / G * dst.s_i + d;
  dst.sc[mi] = __float2half(s);
  dst.mn[mi] = __float2half(lo);
  const int cpw = 32 / bits;
  uint32_t* row = dst.codes + b * dst.c_b + h * dst.c_h + (t0 + tl0) * dst.W + d / cpw;
  for (int t = 0; t < count; ++t) {
    uint32_t w = code_of(to_f(xb[int64_t(t) * D]), lo, s, bits) << layout::key_bit(d, bits);
    w = word_or(w, cpw);
    if (d % cpw == 0) row[int64_t(t) * dst.W] = w;
  }
}

// Per-token groups: block = one token of one (b, h); thread = channel; G channels share stats. The
// token is t0 + blockIdx.x of a block that then holds T tokens (the value layout pairs by T).
template <typename T, bool KEY>
__global__ void pack_per_token_kernel(const T* __restrict__ x, int64_t n, int D, int G, int bits, int64_t t0, int64_t T_total,
                                      BlockRef dst) {
  extern __shared__ float sh[];  // [D] values
  const int d = threadIdx.x, H = gridDim.y;
  const int64_t tl = blockIdx.x, b = blockIdx.z, h = blockIdx.y, t = t0 + tl;
  const float v = to_f(x[((b * H + h) * n + tl) * D + d]);
  sh[d] = v;
  __syncthreads();
  const int g0 = (d / G) * G;
  float lo = sh[g0], hi = sh[g0];
  for (int i = 1; i < G; ++i) {
    lo = fminf(lo, sh[g0 + i]);
    hi = fmaxf(hi, sh[g0 + i]);
  }
  const float s = (hi - lo) / float((1 << bits) - 1);
  if (d % G == 0) {
    const int64_t mi = b * dst.s_b + h * dst.s_h + (d / G) * dst.s_i + t;
    dst.sc[mi] = __float2half(s);
    dst.mn[mi] = __float2half(lo);
  }
  const int cpw = 32 / bits;
  uint32_t* base = dst.codes + b * dst.c_b + h * dst.c_h;
  if constexpr (KEY) {
    uint32_t q = code_of(v, lo, s, bits);
    if (layout::channels_permuted(true, false, D)) {  // thread d writes position d: the code of its channel
      __syncthreads();  // every thread has read the values
      sh[d] = float(q);
      __syncthreads();
      q = uint32_t(sh[layout::permuted_channel(d)]);
    }
    const uint32_t w = word_or(q << layout::key_bit(d, bits), cpw);
    if (d % cpw == 0) base[t * dst.W + d / cpw] = w;
  } else {
    const uint32_t w = word_or(code_of(v, lo, s, bits) << layout::plain_bit(d, bits), cpw);
    if (d % cpw == 0)  // each half-word where the layout puts it (the token pair's other row, maybe)
      for (int hw = 0; hw < 2; ++hw) {
        const auto slot = layout::value_slot(t, T_total, d + hw * cpw / 2, bits);
        reinterpret_cast<uint16_t*>(base)[(slot.row * dst.W + d / cpw) * 2 + slot.bit / 16] = uint16_t(w >> (16 * hw));
      }
  }
}

// Tokens t0.. of a block of T tokens into out [B, H, t1 - t0, D] (fp32): block = (token, b·H + h).
__global__ void dequantize_kernel(BlockRef src, int64_t T, int64_t t0, int64_t nt, int D, int G, int bits,
                                  bool per_channel, bool key_layout, int H, float* __restrict__ out) {
  const int d = threadIdx.x;
  const int64_t t = t0 + blockIdx.x, b = blockIdx.y / H, h = blockIdx.y % H;
  const int cpw = 32 / bits;
  const int p = layout::channels_permuted(key_layout, per_channel, D) ? layout::permuted_position(d) : d;
  const auto slot = layout::code_slot(t, T, p, bits, key_layout);
  const uint32_t q = (src.codes[b * src.c_b + h * src.c_h + slot.row * src.W + p / cpw] >> slot.bit) & ((1u << bits) - 1);
  const int64_t mi = b * src.s_b + h * src.s_h + (per_channel ? (t / G) * src.s_i + d : (d / G) * src.s_i + t);
  out[(int64_t(blockIdx.y) * nt + blockIdx.x) * D + d] = float(q) * __half2float(src.sc[mi]) + __half2float(src.mn[mi]);
}

// One pack_into launch: n tokens into a block that then holds T, from token t0 on.
struct PackLaunch {
  int64_t n;
  int D, G;
  int64_t T, t0;
  int bits;
  bool per_channel, key_layout;
  dim3 tokens;  // (n, H, B)
  BlockRef dst;
  cudaStream_t st;
};
template <typename T>
void launch_pack(const T* x, const PackLaunch& L) {
  if (L.per_channel) {
    const dim3 groups(unsigned((L.n + L.G - 1) / L.G), L.tokens.y, L.tokens.z);
    pack_per_channel_kernel<<<groups, L.D, 0, L.st>>>(x, L.n, L.D, L.G, L.bits, L.t0, L.dst);
  } else if (L.key_layout) {
    pack_per_token_kernel<T, true><<<L.tokens, L.D, L.D * sizeof(float), L.st>>>(x, L.n, L.D, L.G, L.bits, L.t0, L.T, L.dst);
  } else {
    pack_per_token_kernel<T, false><<<L.tokens, L.D, L.D * sizeof(float), L.st>>>(x, L.n, L.D, L.G, L.bits, L.t0, L.T, L.dst);
  }
}

// ---------------------------------------------------------------- full-precision attention
// A full-precision cache alone (no packed tokens yet, or the fp16 cache): the packed kernel's
// full-precision tiles (attend_dense_tile) over seg[1], split-K; seg[0] (sinks) on the last split's
// last warp.
struct DenseParams {
  const void* q;  // as PackedParams::q
  int q_type;
  int Hkv, rows, qgroups, chunk;
  DenseSeg seg[2];
  int tokens_per_split;  // multiple of kFastWarps·kFastTile
  float scale_log2;
  SplitOutput out;
};

__global__ void __launch_bounds__(kFastWarps * 32) dense_attention_kernel(const DenseParams p) {
  allow_dependent_launch();
  __shared__ __align__(16) QueryFragments qf_s;
  __shared__ SplitMerge merge;
  const int warp = threadIdx.x / 32;
  const BlockRows br = block_rows(p.Hkv, p.rows, p.qgroups, 8);
  stage_query<NaturalPair>(qf_s, p.q, p.q_type, br.row0, br.nvalid, 8);
  uint32_t qf[16];
  load_query(qf_s, qf);
  int qt[2];
  column_tokens(br, 8, p.chunk, qt);
  const int64_t bh = int64_t(br.b) * p.Hkv + blockIdx.y;
  float m_run[2] = {-INFINITY, -INFINITY};
  float acc[8][4] = {};
  ColumnSums cs;
  if (blockIdx.x == gridDim.x - 1 && warp == kFastWarps - 1) {
    const DenseSeg sink = live(p.seg[0]);
    for (int r0 = 0; r0 < sink.R; r0 += kFastTile)
      attend_dense_tile<NaturalPair, false>(sink, bh, r0, qf, qt, p.scale_log2, m_run, cs, acc);
  }
  const int tpw = p.tokens_per_split / kFastWarps, r_begin = blockIdx.x * p.tokens_per_split + warp * tpw;
  DenseSeg kv = live(p.seg[1]);
  kv.R = min(kv.R, r_begin + tpw);  // attend_dense_tile masks tokens from R on
  for (int r0 = r_begin; r0 < kv.R; r0 += kFastTile)
    attend_dense_tile<NaturalPair, false>(kv, bh, r0, qf, qt, p.scale_log2, m_run, cs, acc);
  store_split(merge, m_run, cs, acc, br.nvalid, 8, br.row0, blockIdx.x, p.out);
}

// Dispatch over key bits (the file of each width), value bits, ng and ngk.
PackedKernel packed_kernel(int bk, int bv, int ng, int ngk) {
  const PackedKernel k = bk == 2 ? packed_kernel_k2(bv, ng, ngk) : bk == 4 ? packed_kernel_k4(bv, ng, ngk)
                         : bk == 8 ? packed_kernel_k8(bv, ng, ngk) : nullptr;
  if (!k) throw error("fused attention: no kernel for key/value bits {}/{}, folded groups {}, key groups {}", bk, bv, ng, ngk);
  return k;
}

// A packed tensor the kernel copies in 16-byte chunks as it lies: rows (the last dim) contiguous,
// (b, h) planes at one stride, 16-byte-aligned rows; `row_stride_ok`: the second-to-last stride.
const at::Tensor& packed_tensor(const at::Tensor& x, bool row_stride_ok, const char* what) {
  const bool ok = x.dim() == 4 && x.stride(3) == 1 && row_stride_ok && x.stride(0) == x.size(1) * x.stride(1) &&
                  reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0 && (x.stride(2) * x.element_size()) % 16 == 0;
  if (!ok)
    throw error("fused attention: packed {} must have contiguous 16-byte-aligned rows (as the cache stores and "
                "quantize_pack return them)", what);
  return x;
}

}  // namespace

void pack_into(const at::Tensor& x_in, const PackedBlock& dst, int64_t t0) {
  const c10::cuda::CUDAGuard guard(dst.codes.device());
  const auto x = x_in.to(dst.codes.device()).contiguous();
  const int64_t B = x.size(0), H = x.size(1), n = x.size(2), D = x.size(3), T = t0 + n;
  if (dst.codes.size(2) < T || dst.codes.size(3) != D * dst.bits / 32 || D > 1024)
    throw error("pack_into: destination holds {} tokens of {} words, needs {} of {}", dst.codes.size(2), dst.codes.size(3), T,
                D * dst.bits / 32);
  const int64_t G = dst.per_channel ? dst.group : std::min<int64_t>(dst.group, D);
  if (dst.per_channel && t0 % G != 0) throw error("pack_into: per-channel groups start at a multiple of {}, not {}", G, t0);
  if (n == 0 || B * H == 0) return;
  const PackLaunch L{n, int(D), int(G), T, t0, dst.bits, dst.per_channel, dst.key_layout, dim3(unsigned(n), unsigned(H), unsigned(B)),
                     block_ref(dst), at::cuda::getCurrentCUDAStream()};
  switch (x.scalar_type()) {
    case at::kFloat: launch_pack(x.data_ptr<float>(), L); break;
    case at::kHalf: launch_pack(reinterpret_cast<const __half*>(x.data_ptr<at::Half>()), L); break;
    case at::kBFloat16: launch_pack(reinterpret_cast<const __nv_bfloat16*>(x.data_ptr<at::BFloat16>()), L); break;
    default: throw error("pack_into: unsupported dtype");
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor dequantize(const PackedBlock& b, at::ScalarType dtype, int64_t t0, int64_t t1) {
  const c10::cuda::CUDAGuard guard(b.codes.device());
  const int64_t B = b.codes.size(0), H = b.codes.size(1), T = b.codes.size(2);
  const int64_t D = b.codes.size(3) * (32 / b.bits);
  if (t0 < 0 || t0 > t1 || t1 > T) throw error("dequantize: token range [{}, {}) outside a block of {}", t0, t1, T);
  auto out = at::empty({B, H, t1 - t0, D}, b.codes.options().dtype(at::kFloat));
  if (t1 > t0 && B * H > 0) {
    dequantize_kernel<<<dim3(unsigned(t1 - t0), unsigned(B * H)), unsigned(D), 0, at::cuda::getCurrentCUDAStream()>>>(
        block_ref(b), T, t0, t1 - t0, int(D), b.group, b.bits, b.per_channel, b.key_layout, int(H), out.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return out.to(dtype);
}

at::Tensor packed_attention(const at::Tensor& q, const PackedBlock* k, const PackedBlock* v, const FpSegment& sink,
                            const FpSegment& tail, double scale) {
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t Tq = k ? k->tokens() : 0;
  const int64_t B = q.size(0), n = q.dim() == 4 ? q.size(2) : 0;
  const int64_t Hkv = cache_kv_heads(Tq > 0 ? k->codes.size(1) : 0, sink, tail, n, "fused attention");
  const QueryRef qr = query_ref(q);
  auto st = at::cuda::getCurrentCUDAStream();
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const float scale_log2 = float(scale * 1.4426950408889634);

  if (Tq == 0) {
    const RowGrid rg = row_grid(q, Hkv, 8, "fused attention");
    DenseParams p{qr.q.data_ptr(), qr.type, int(Hkv), rg.rows, rg.qgroups, int(n),
                  {dense_seg(sink, B, Hkv, 0, "sink keys/values"), dense_seg(tail, B, Hkv, int(n), "tail keys/values")},
                  0, scale_log2, {}};
    // a graph-replayed run's splits cover its last step
    const int64_t R = tail.max_tokens();
    p.tokens_per_split = split_tokens(R, sink.max_tokens(), rg.blocks_per_split(), sms * resident_blocks(dense_attention_kernel, 0));
    const int splits = int((R + p.tokens_per_split - 1) / p.tokens_per_split);
    return launch_split_k(dense_attention_kernel, p, rg, splits, 0, q.device(), st);
  }

  const std::string why = packed_attention_unsupported(*k, *v, kD);
  if (!why.empty()) throw error("fused attention: {}", why);
  if (v->tokens() != Tq || k->codes.size(0) != B || v->codes.size(1) != Hkv || k->codes.size(3) != kD * k->bits / 32 ||
      v->codes.size(3) != kD * v->bits / 32)
    throw error("fused attention: packed keys/values do not match [B, Hkv, T, D·bits/32]");
  if (Tq % kFastTile != 0 || (k->per_channel && Tq % k->group != 0))
    throw error("fused attention: {} packed tokens are not whole tiles of {} (and key groups of {})", Tq, kFastTile, k->group);
  // value groups per token, and how many of them fold into the mma's columns (the rows repeat once
  // per group, so rows·groups <= 8); per-token keys: their groups per token
  const int vg = int(kD / v->group), ngk = k->per_channel ? 0 : int(kD / k->group);
  const int64_t rows = q.size(1) / Hkv * n;
  const int ng = vg == 1 ? 1 : (vg == 2 && rows <= 4 ? 2 : 0);
  const RowGrid rg = row_grid(q, Hkv, ng > 0 ? 8 / ng : 8, "fused attention");
  // beside packed tokens the full-precision segments join the packed launch (a launch of their own
  // cost more than their reading)
  const PackedKernel kernel = packed_kernel(k->bits, v->bits, ng, ngk);
  const int smem = packed_smem_bytes(k->bits, v->bits, vg);

  const auto& kc = packed_tensor(k->codes, k->codes.stride(2) == k->codes.size(3), "key codes");
  const auto& vc = packed_tensor(v->codes, v->codes.stride(2) == v->codes.size(3), "value codes");
  // statistics: per-channel [B, H, groups, kD] with contiguous groups; per-token [B, H, groups, T]
  // with a row stride of whole 16-byte chunks and contiguous group planes
  auto stat_ok = [](const at::Tensor& s, bool per_channel) {
    return per_channel ? s.stride(2) == kD : s.stride(1) == s.size(2) * s.stride(2);
  };
  const auto& ksc = packed_tensor(k->scale, stat_ok(k->scale, k->per_channel), "key scales");
  const auto& kmn = packed_tensor(k->minv, stat_ok(k->minv, k->per_channel), "key mins");
  const auto& vsc = packed_tensor(v->scale, stat_ok(v->scale, false), "value scales");
  const auto& vmn = packed_tensor(v->minv, stat_ok(v->minv, false), "value mins");
  if (ksc.strides() != kmn.strides() || vsc.strides() != vmn.strides())
    throw error("fused attention: packed scales and mins must share strides");

  PackedParams p{};
  p.q = qr.q.data_ptr();
  p.q_type = qr.type;
  p.Hkv = int(Hkv);
  p.rows = rg.rows;
  p.qgroups = rg.qgroups;
  p.chunk = int(n);
  p.k = reinterpret_cast<const uint32_t*>(kc.data_ptr<int32_t>());
  p.k_bh = kc.stride(1);
  p.ks = reinterpret_cast<const __half*>(ksc.data_ptr<at::Half>());
  p.km = reinterpret_cast<const __half*>(kmn.data_ptr<at::Half>());
  p.ks_bh = ksc.stride(1);
  p.ks_row = ksc.stride(2);
  p.gk = k->group;
  p.v = reinterpret_cast<const uint32_t*>(vc.data_ptr<int32_t>());
  p.v_bh = vc.stride(1);
  p.vs = reinterpret_cast<const __half*>(vsc.data_ptr<at::Half>());
  p.vm = reinterpret_cast<const __half*>(vmn.data_ptr<at::Half>());
  p.vs_bh = vsc.stride(1);
  p.vs_row = vsc.stride(2);
  p.gv = v->group;
  p.T = int(Tq);
  p.tail[0] = dense_seg(sink, B, Hkv, 0, "sink keys/values");
  p.tail[1] = dense_seg(tail, B, Hkv, int(n), "tail keys/values");
  p.tokens_per_split = split_tokens(Tq, sink.max_tokens() + tail.max_tokens(), rg.blocks_per_split(), sms * resident_blocks(kernel, smem));
  p.scale_log2 = scale_log2;
  const int splits = int((Tq + p.tokens_per_split - 1) / p.tokens_per_split);
  return launch_split_k(kernel, p, rg, splits, smem, q.device(), st);
}

}  // namespace kvx::kernels::cuda
