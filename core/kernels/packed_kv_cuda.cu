// CUDA kernels of packed_kv.h. The CPU reference (packed_kv_ref.cpp) defines the numbers; the
// tests in tests/kernels compare the two per bit width, group size, GQA ratio and odd length.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>

#include "core/common/error.h"
#include "core/kernels/packed_kv.h"

namespace kvx::kernels::cuda {
namespace {

constexpr int kD = 128;     // head_dim of the fused attention kernel
constexpr int kWarps = 4;   // warps per block
constexpr int kTile = 32;   // tokens per warp tile (one per lane in the score phase)
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f(float x) { return x; }

__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(kFull, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(kFull, x, o);
  return x;
}
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

// ---------------------------------------------------------------- quantize and pack
// Per-channel groups: block = one group of G tokens of one (b, h); thread = channel.
template <typename T>
__global__ void pack_per_channel_kernel(const T* __restrict__ x, int64_t T_len, int D, int G, int bits,
                                        uint32_t* __restrict__ codes, __half* __restrict__ sc,
                                        __half* __restrict__ mn) {
  const int d = threadIdx.x, g = blockIdx.x;
  const int64_t bh = int64_t(blockIdx.z) * gridDim.y + blockIdx.y;
  const T* xb = x + (bh * T_len + int64_t(g) * G) * D + d;
  float lo = to_f(xb[0]), hi = lo;
  for (int t = 1; t < G; ++t) {
    float v = to_f(xb[int64_t(t) * D]);
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
  const float s = (hi - lo) / float((1 << bits) - 1);
  const int64_t mi = (bh * (T_len / G) + g) * D + d;
  sc[mi] = __float2half(s);
  mn[mi] = __float2half(lo);
  const int cpw = 32 / bits, W = D / cpw;
  for (int t = 0; t < G; ++t) {
    uint32_t w = code_of(to_f(xb[int64_t(t) * D]), lo, s, bits) << ((d % cpw) * bits);
    w = word_or(w, cpw);
    if (d % cpw == 0) codes[(bh * T_len + int64_t(g) * G + t) * W + d / cpw] = w;
  }
}

// Per-token groups: block = one token of one (b, h); thread = channel; G channels share stats.
template <typename T>
__global__ void pack_per_token_kernel(const T* __restrict__ x, int64_t T_len, int D, int G, int bits,
                                      uint32_t* __restrict__ codes, __half* __restrict__ sc,
                                      __half* __restrict__ mn) {
  extern __shared__ float sh[];  // [D] values
  const int d = threadIdx.x;
  const int64_t t = blockIdx.x, bh = int64_t(blockIdx.z) * gridDim.y + blockIdx.y;
  const float v = to_f(x[(bh * T_len + t) * D + d]);
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
    const int64_t mi = (bh * T_len + t) * (D / G) + d / G;
    sc[mi] = __float2half(s);
    mn[mi] = __float2half(lo);
  }
  const int cpw = 32 / bits;
  uint32_t w = word_or(code_of(v, lo, s, bits) << ((d % cpw) * bits), cpw);
  if (d % cpw == 0) codes[(bh * T_len + t) * (D / cpw) + d / cpw] = w;
}

__global__ void dequantize_kernel(const uint32_t* __restrict__ codes, const __half* __restrict__ sc,
                                  const __half* __restrict__ mn, int64_t T_len, int D, int G, int bits,
                                  bool per_channel, float* __restrict__ out) {
  const int d = threadIdx.x;
  const int64_t t = blockIdx.x, bh = blockIdx.y;
  const int cpw = 32 / bits;
  const uint32_t q = (codes[(bh * T_len + t) * (D / cpw) + d / cpw] >> ((d % cpw) * bits)) & ((1u << bits) - 1);
  const int64_t mi = per_channel ? (bh * (T_len / G) + t / G) * D + d : (bh * T_len + t) * (D / G) + d / G;
  out[(bh * T_len + t) * D + d] = float(q) * __half2float(sc[mi]) + __half2float(mn[mi]);
}

// ---------------------------------------------------------------- fused decode attention
struct AttnParams {
  const float* q;  // [B, Hq, kD]
  int Hq, Hkv;
  const void* k;  // codes (uint32) or dense rows (TD)
  int64_t k_bh;   // stride between (b, h) in words / elements
  const __half* ks;
  const __half* km;
  int64_t ks_bh;
  int gk;
  const void* v;
  int64_t v_bh;
  const __half* vs;
  const __half* vm;
  int64_t vs_bh;
  int gv;
  int T;                 // tokens in this part
  int tokens_per_split;  // multiple of kTile
  int split_offset, n_splits_total;
  float scale_log2;      // softmax scale · log2(e)
  float* part_o;         // [B, Hq, n_splits_total, kD]
  float* part_m;         // [B, Hq, n_splits_total]
  float* part_l;
};

// BK/BV: 2, 4, 8 = packed codes; 16 = dense rows of TD. NREP = Hq / Hkv.
template <int BK, int BV, int NREP, typename TD>
__global__ void __launch_bounds__(kWarps * 32) decode_attention_kernel(const AttnParams p) {
  __shared__ float q_s[NREP][kD];
  __shared__ float qs_s[kWarps][NREP][BK < 16 ? kD : 1];
  __shared__ float qm_s[kWarps][NREP];
  __shared__ float p_s[kWarps][NREP][kTile];
  __shared__ float red_m[kWarps][NREP], red_l[kWarps][NREP];
  __shared__ float red_o[kWarps][NREP][kD];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int hkv = blockIdx.y, b = blockIdx.z;
  const int64_t bh = int64_t(b) * p.Hkv + hkv;
  const int t_begin = blockIdx.x * p.tokens_per_split;
  const int t_end = min(p.T, t_begin + p.tokens_per_split);

  for (int i = threadIdx.x; i < NREP * kD; i += blockDim.x)
    q_s[i / kD][i % kD] = p.q[(int64_t(b) * p.Hq + hkv * NREP + i / kD) * kD + i % kD];
  __syncthreads();

  // Value-phase lane geometry: CH channels per lane, LPT lanes per token, TPI tokens per pass.
  constexpr int CH = BV == 16 ? 4 : 32 / BV;
  constexpr int LPT = kD / CH;
  constexpr int TPI = 32 / LPT;
  const int slot = lane / LPT, c0 = (lane % LPT) * CH;

  float m[NREP], l[NREP], acc[NREP][CH];
#pragma unroll
  for (int h = 0; h < NREP; ++h) {
    m[h] = -INFINITY;
    l[h] = 0.f;
#pragma unroll
    for (int c = 0; c < CH; ++c) acc[h][c] = 0.f;
  }
  int cur_group = -1;

  for (int t0 = t_begin + warp * kTile; t0 < t_end; t0 += kWarps * kTile) {
    // ---- scores: lane = token
    const int t = t0 + lane;
    float s[NREP];
#pragma unroll
    for (int h = 0; h < NREP; ++h) s[h] = 0.f;
    if constexpr (BK < 16) {
      const int g = t0 / p.gk;  // a tile never straddles a group (gk % 32 == 0)
      if (g != cur_group) {
        cur_group = g;
        const __half* ks = p.ks + bh * p.ks_bh + int64_t(g) * kD;
        const __half* km = p.km + bh * p.ks_bh + int64_t(g) * kD;
#pragma unroll
        for (int h = 0; h < NREP; ++h) {
          float part = 0.f;
          for (int d = lane; d < kD; d += 32) {
            qs_s[warp][h][d] = q_s[h][d] * __half2float(ks[d]);
            part += q_s[h][d] * __half2float(km[d]);
          }
          part = warp_sum(part);
          if (lane == 0) qm_s[warp][h] = part;
        }
        __syncwarp();
      }
      if (t < t_end) {
        constexpr int CPW = 32 / BK, WK = kD / CPW;
        const uint4* row = reinterpret_cast<const uint4*>(static_cast<const uint32_t*>(p.k) + bh * p.k_bh +
                                                          int64_t(t) * WK);
#pragma unroll
        for (int w4 = 0; w4 < WK / 4; ++w4) {
          const uint4 q4 = row[w4];
          const uint32_t words[4] = {q4.x, q4.y, q4.z, q4.w};
#pragma unroll
          for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int c = 0; c < CPW; ++c) {
              const float code = float((words[j] >> (c * BK)) & ((1u << BK) - 1));
              const int d = (w4 * 4 + j) * CPW + c;
#pragma unroll
              for (int h = 0; h < NREP; ++h) s[h] += qs_s[warp][h][d] * code;
            }
        }
#pragma unroll
        for (int h = 0; h < NREP; ++h) s[h] += qm_s[warp][h];
      }
    } else {
      if (t < t_end) {
        const uint4* row = reinterpret_cast<const uint4*>(static_cast<const TD*>(p.k) + bh * p.k_bh + int64_t(t) * kD);
#pragma unroll
        for (int w4 = 0; w4 < kD * int(sizeof(TD)) / 16; ++w4) {
          const uint4 q4 = row[w4];
          const TD* vals = reinterpret_cast<const TD*>(&q4);
#pragma unroll
          for (int j = 0; j < 16 / int(sizeof(TD)); ++j) {
            const float x = to_f(vals[j]);
            const int d = w4 * (16 / int(sizeof(TD))) + j;
#pragma unroll
            for (int h = 0; h < NREP; ++h) s[h] += q_s[h][d] * x;
          }
        }
      }
    }
    // ---- online softmax over the tile
#pragma unroll
    for (int h = 0; h < NREP; ++h) {
      const float sh = t < t_end ? s[h] * p.scale_log2 : -INFINITY;
      const float m_new = fmaxf(m[h], warp_max(sh));
      const float pr = m_new == -INFINITY ? 0.f : exp2f(sh - m_new);
      const float corr = m_new == -INFINITY ? 1.f : exp2f(m[h] - m_new);
      l[h] = l[h] * corr + warp_sum(pr);
      m[h] = m_new;
#pragma unroll
      for (int c = 0; c < CH; ++c) acc[h][c] *= corr;
      p_s[warp][h][lane] = pr;
    }
    __syncwarp();
    // ---- values: lane = CH channels of one token slot
#pragma unroll 4
    for (int it = 0; it < kTile / TPI; ++it) {
      const int tl = it * TPI + slot, tv = t0 + tl;
      if (tv >= t_end) continue;
      if constexpr (BV < 16) {
        const uint32_t word = static_cast<const uint32_t*>(p.v)[bh * p.v_bh + int64_t(tv) * (kD / CH) + lane % LPT];
        const int64_t mi = bh * p.vs_bh + int64_t(tv) * (kD / p.gv) + c0 / p.gv;
        const float sc = __half2float(p.vs[mi]), mn = __half2float(p.vm[mi]);
#pragma unroll
        for (int h = 0; h < NREP; ++h) {
          const float pr = p_s[warp][h][tl], ps = pr * sc, pm = pr * mn;
#pragma unroll
          for (int c = 0; c < CH; ++c) acc[h][c] += ps * float((word >> (c * BV)) & ((1u << BV) - 1)) + pm;
        }
      } else {
        const uint2 raw = *reinterpret_cast<const uint2*>(static_cast<const TD*>(p.v) + bh * p.v_bh + int64_t(tv) * kD + c0);
        const TD* vals = reinterpret_cast<const TD*>(&raw);
#pragma unroll
        for (int h = 0; h < NREP; ++h) {
          const float pr = p_s[warp][h][tl];
#pragma unroll
          for (int c = 0; c < CH; ++c) acc[h][c] += pr * to_f(vals[c]);
        }
      }
    }
    __syncwarp();
  }

  // token slots of one channel chunk -> lane % LPT
#pragma unroll
  for (int o = LPT; o < 32; o <<= 1)
#pragma unroll
    for (int h = 0; h < NREP; ++h)
#pragma unroll
      for (int c = 0; c < CH; ++c) acc[h][c] += __shfl_xor_sync(kFull, acc[h][c], o);
#pragma unroll
  for (int h = 0; h < NREP; ++h) {
    if (lane == 0) {
      red_m[warp][h] = m[h];
      red_l[warp][h] = l[h];
    }
    if (lane < LPT)
#pragma unroll
      for (int c = 0; c < CH; ++c) red_o[warp][h][c0 + c] = acc[h][c];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < NREP * kD; i += blockDim.x) {
    const int h = i / kD, d = i % kD;
    float M = -INFINITY;
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, red_m[w][h]);
    float L = 0.f, O = 0.f;
    if (M != -INFINITY)
      for (int w = 0; w < kWarps; ++w) {
        const float f = exp2f(red_m[w][h] - M);
        L += red_l[w][h] * f;
        O += red_o[w][h][d] * f;
      }
    const int64_t slot_i = (int64_t(b) * p.Hq + hkv * NREP + h) * p.n_splits_total + p.split_offset + blockIdx.x;
    p.part_o[slot_i * kD + d] = O;
    if (d == 0) {
      p.part_m[slot_i] = M;
      p.part_l[slot_i] = L;
    }
  }
}

__global__ void combine_kernel(const float* __restrict__ part_o, const float* __restrict__ part_m,
                               const float* __restrict__ part_l, int n_splits, float* __restrict__ out) {
  const int64_t bq = blockIdx.x;
  const int d = threadIdx.x;
  float M = -INFINITY;
  for (int s = 0; s < n_splits; ++s) M = fmaxf(M, part_m[bq * n_splits + s]);
  float L = 0.f, O = 0.f;
  if (M != -INFINITY)
    for (int s = 0; s < n_splits; ++s) {
      const float f = exp2f(part_m[bq * n_splits + s] - M);
      L += part_l[bq * n_splits + s] * f;
      O += part_o[(bq * n_splits + s) * kD + d] * f;
    }
  out[bq * kD + d] = L > 0.f ? O / L : 0.f;
}

template <int BK, int BV, typename TD>
void launch_nrep(int nrep, dim3 grid, const AttnParams& p, cudaStream_t st) {
  switch (nrep) {
#define KVX_NREP(N) \
  case N: decode_attention_kernel<BK, BV, N, TD><<<grid, kWarps * 32, 0, st>>>(p); break;
    KVX_NREP(1) KVX_NREP(2) KVX_NREP(3) KVX_NREP(4) KVX_NREP(7) KVX_NREP(8)
#undef KVX_NREP
    default: throw error("fused decode attention: GQA ratio {} is not compiled (1, 2, 3, 4, 7, 8)", nrep);
  }
}

void launch_packed(int bk, int bv, int nrep, dim3 grid, const AttnParams& p, cudaStream_t st) {
  const int key = bk * 10 + bv;
  switch (key) {
#define KVX_BITS(K, V) \
  case K * 10 + V: launch_nrep<K, V, __half>(nrep, grid, p, st); break;
    KVX_BITS(2, 2) KVX_BITS(2, 4) KVX_BITS(2, 8) KVX_BITS(4, 2) KVX_BITS(4, 4) KVX_BITS(4, 8)
    KVX_BITS(8, 2) KVX_BITS(8, 4) KVX_BITS(8, 8)
#undef KVX_BITS
    default: throw error("fused decode attention: key/value bits {}/{} not supported", bk, bv);
  }
}

void launch_dense(at::ScalarType dt, int nrep, dim3 grid, const AttnParams& p, cudaStream_t st) {
  if (dt == at::kHalf) launch_nrep<16, 16, __half>(nrep, grid, p, st);
  else if (dt == at::kBFloat16) launch_nrep<16, 16, __nv_bfloat16>(nrep, grid, p, st);
  else throw error("fused decode attention: full-precision tail must be float16 or bfloat16");
}

int choose_tokens_per_split(int64_t T, int64_t bh_blocks) {
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t want = std::max<int64_t>(1, (4 * sms + bh_blocks - 1) / bh_blocks);
  int64_t tps = (T + want - 1) / want;
  tps = std::max<int64_t>(kWarps * kTile, (tps + kTile - 1) / kTile * kTile);
  return int(tps);
}

void check_dense(const at::Tensor& x, const char* what) {
  if (x.dim() != 4 || x.size(3) != kD || x.stride(3) != 1 || x.stride(2) != kD || x.stride(0) != x.size(1) * x.stride(1))
    throw error("fused decode attention: {} must be [B, Hkv, T, {}] with contiguous rows", what, kD);
}

}  // namespace

PackedBlock quantize_pack(const at::Tensor& x_in, int bits, int group, bool per_channel) {
  if (bits != 2 && bits != 4 && bits != 8) throw error("quantize_pack: bits must be 2, 4 or 8, got {}", bits);
  const c10::cuda::CUDAGuard guard(x_in.device());
  auto x = x_in.contiguous();
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2), D = x.size(3);
  if ((D * bits) % 32 != 0 || D > 1024) throw error("quantize_pack: unsupported head_dim {}", D);
  const int64_t G = per_channel ? group : std::min<int64_t>(group, D);
  if (per_channel && T % G != 0) throw error("quantize_pack: per-channel groups need a multiple of {} tokens, got {}", G, T);
  if (!per_channel && D % G != 0) throw error("quantize_pack: group {} does not divide head_dim {}", G, D);
  PackedBlock out;
  out.bits = bits;
  out.group = int(G);
  out.per_channel = per_channel;
  auto opt = x.options();
  out.codes = at::empty({B, H, T, D * bits / 32}, opt.dtype(at::kInt));
  out.scale = per_channel ? at::empty({B, H, T / G, D}, opt.dtype(at::kHalf)) : at::empty({B, H, T, D / G}, opt.dtype(at::kHalf));
  out.minv = at::empty_like(out.scale);
  if (T == 0 || B * H == 0) return out;
  auto st = at::cuda::getCurrentCUDAStream();
  auto* codes = reinterpret_cast<uint32_t*>(out.codes.data_ptr<int32_t>());
  auto* sc = reinterpret_cast<__half*>(out.scale.data_ptr<at::Half>());
  auto* mn = reinterpret_cast<__half*>(out.minv.data_ptr<at::Half>());
  auto run = [&](auto* xp) {
    if (per_channel)
      pack_per_channel_kernel<<<dim3(T / G, H, B), D, 0, st>>>(xp, T, int(D), int(G), bits, codes, sc, mn);
    else
      pack_per_token_kernel<<<dim3(T, H, B), D, D * sizeof(float), st>>>(xp, T, int(D), int(G), bits, codes, sc, mn);
  };
  switch (x.scalar_type()) {
    case at::kFloat: run(x.data_ptr<float>()); break;
    case at::kHalf: run(reinterpret_cast<const __half*>(x.data_ptr<at::Half>())); break;
    case at::kBFloat16: run(reinterpret_cast<const __nv_bfloat16*>(x.data_ptr<at::BFloat16>())); break;
    default: throw error("quantize_pack: unsupported dtype");
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor dequantize(const PackedBlock& b, at::ScalarType dtype) {
  const c10::cuda::CUDAGuard guard(b.codes.device());
  const int64_t B = b.codes.size(0), H = b.codes.size(1), T = b.codes.size(2);
  const int64_t D = b.codes.size(3) * (32 / b.bits);
  auto out = at::empty({B, H, T, D}, b.codes.options().dtype(at::kFloat));
  if (T > 0 && B * H > 0) {
    dequantize_kernel<<<dim3(T, B * H), D, 0, at::cuda::getCurrentCUDAStream()>>>(
        reinterpret_cast<const uint32_t*>(b.codes.data_ptr<int32_t>()),
        reinterpret_cast<const __half*>(b.scale.data_ptr<at::Half>()),
        reinterpret_cast<const __half*>(b.minv.data_ptr<at::Half>()), T, int(D), b.group, b.bits, b.per_channel,
        out.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return out.to(dtype);
}

namespace {

at::Tensor run_attention(const at::Tensor& q, const PackedBlock* k, const PackedBlock* v, const at::Tensor& k_fp,
                         const at::Tensor& v_fp, double scale) {
  const c10::cuda::CUDAGuard guard(q.device());
  if (q.dim() != 3 || q.size(2) != kD) throw error("fused decode attention: q must be [B, Hq, {}]", kD);
  const int64_t B = q.size(0), Hq = q.size(1);
  const int64_t Tq = k ? k->tokens() : 0;
  const int64_t R = k_fp.defined() ? k_fp.size(2) : 0;
  const int64_t Hkv = Tq > 0 ? k->codes.size(1) : (R > 0 ? k_fp.size(1) : 0);
  if (Hkv == 0) throw error("fused decode attention: empty cache");
  if (Hq % Hkv != 0) throw error("fused decode attention: {} query heads do not group over {} KV heads", Hq, Hkv);
  const int nrep = int(Hq / Hkv);
  auto qf = q.to(at::kFloat).contiguous();
  auto st = at::cuda::getCurrentCUDAStream();

  AttnParams base{};
  base.q = qf.data_ptr<float>();
  base.Hq = int(Hq);
  base.Hkv = int(Hkv);
  base.scale_log2 = float(scale * 1.4426950408889634);

  int n_q = 0, n_r = 0, tps_q = 0, tps_r = 0;
  if (Tq > 0) {
    if (k->group % kTile != 0 || !k->per_channel || v->per_channel || v->group % 16 != 0)
      throw error("fused decode attention: needs per-channel keys with group % 32 == 0 and per-token values");
    tps_q = choose_tokens_per_split(Tq, B * Hkv);
    n_q = int((Tq + tps_q - 1) / tps_q);
  }
  if (R > 0) {
    check_dense(k_fp, "full-precision keys");
    check_dense(v_fp, "full-precision values");
    tps_r = choose_tokens_per_split(R, B * Hkv);
    n_r = int((R + tps_r - 1) / tps_r);
  }
  const int total = n_q + n_r;
  auto fopt = qf.options();
  auto part_o = at::empty({B, Hq, total, kD}, fopt);
  auto part_m = at::empty({B, Hq, total}, fopt);
  auto part_l = at::empty({B, Hq, total}, fopt);
  base.part_o = part_o.data_ptr<float>();
  base.part_m = part_m.data_ptr<float>();
  base.part_l = part_l.data_ptr<float>();
  base.n_splits_total = total;

  if (n_q > 0) {
    AttnParams p = base;
    p.k = k->codes.data_ptr<int32_t>();
    p.k_bh = Tq * k->codes.size(3);
    p.ks = reinterpret_cast<const __half*>(k->scale.data_ptr<at::Half>());
    p.km = reinterpret_cast<const __half*>(k->minv.data_ptr<at::Half>());
    p.ks_bh = k->scale.size(2) * kD;
    p.gk = k->group;
    p.v = v->codes.data_ptr<int32_t>();
    p.v_bh = Tq * v->codes.size(3);
    p.vs = reinterpret_cast<const __half*>(v->scale.data_ptr<at::Half>());
    p.vm = reinterpret_cast<const __half*>(v->minv.data_ptr<at::Half>());
    p.vs_bh = Tq * v->scale.size(3);
    p.gv = v->group;
    p.T = int(Tq);
    p.tokens_per_split = tps_q;
    p.split_offset = 0;
    launch_packed(k->bits, v->bits, nrep, dim3(n_q, Hkv, B), p, st);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (n_r > 0) {
    AttnParams p = base;
    p.k = k_fp.data_ptr();
    p.k_bh = k_fp.stride(1);
    p.v = v_fp.data_ptr();
    p.v_bh = v_fp.stride(1);
    p.T = int(R);
    p.tokens_per_split = tps_r;
    p.split_offset = n_q;
    launch_dense(k_fp.scalar_type(), nrep, dim3(n_r, Hkv, B), p, st);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  auto out = at::empty({B, Hq, kD}, fopt);
  combine_kernel<<<dim3(B * Hq), kD, 0, st>>>(base.part_o, base.part_m, base.part_l, total, out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

at::Tensor decode_attention(const at::Tensor& q, const PackedBlock& k, const PackedBlock& v,
                            const at::Tensor& k_res, const at::Tensor& v_res, double scale) {
  return run_attention(q, &k, &v, k_res, v_res, scale);
}

at::Tensor decode_attention_dense(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  return run_attention(q, nullptr, nullptr, k, v, scale);
}

}  // namespace kvx::kernels::cuda
