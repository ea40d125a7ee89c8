// CUDA kernels of packed_kv.h. The CPU reference (packed_kv_ref.cpp) defines the numbers; the
// tests in tests/kernels compare the two per bit width, group size, GQA ratio and odd length.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdlib>

#include "core/common/error.h"
#include "core/kernels/decode_common.cuh"
#include "core/kernels/packed_kv.h"

namespace kvx::kernels::cuda {
namespace {

constexpr int kD = 128;     // head_dim of the fused attention kernel
constexpr int kWarps = 4;   // warps per block
constexpr int kTile = 32;   // tokens per warp tile (one per lane in the score phase)
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
  const void* q;  // [B, Hq, kD], batch stride q_bs, dtype q_type (see load_q)
  int64_t q_bs;
  int q_type;
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
    q_s[i / kD][i % kD] = load_q(p.q, p.q_type, p.q_bs, b, int64_t(hkv * NREP + i / kD) * kD + i % kD);
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

// ---------------------------------------------------------------- tensor-core packed decode attention
// One warp streams a contiguous token range in tiles of 32 tokens; both products run on the tensor
// cores (mma.m16n8k16, fp16 inputs, fp32 accumulation):
//   scores  S[head, tok] = Qs[head, ch] · X[ch, tok]  (A = query pre-scaled by the per-channel key
//           scale, rows = the NREP <= 8 heads of one KV head; B = raw key codes)
//   output  Oᵀ[ch, head] += V[ch, tok] · Pᵀ[tok, head]  (A = dequantized values, B = probabilities
//           straight from the score fragments, the flash-attention register reuse)
// Codes become fp16 without conversions: (word & mask) | 0x6400 is 1024 + code·2^(b·k) exactly for the
// k-th code of a byte. Keys subtract 1024 (exact) and the query side carries scale·2^-(b·k); Σ q·min is
// one per-group constant. Values are exact codes (one HFMA2) then code·scale + min (one HFMA2), since
// their scale changes per token.
constexpr int kFastWarps = 4;
constexpr int kFastTile = 32;

__device__ __forceinline__ uint32_t h2u(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }
__device__ __forceinline__ __half2 u2h(uint32_t u) { return *reinterpret_cast<__half2*>(&u); }

// d += A·B, m16n8k16, row.col, f16 x f16 -> f32.
__device__ __forceinline__ void mma16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// fp16 number c of 16 words (as float).
__device__ __forceinline__ float half_at(const uint32_t (&w)[16], int c) {
  const uint32_t x = w[c >> 1];
  return __half2float(__ushort_as_half((unsigned short)((c & 1) ? (x >> 16) : (x & 0xffffu))));
}

template <int N>
__device__ __forceinline__ void ldg_words(const uint32_t* p, uint32_t (&w)[N]) {
  if constexpr (N == 1) {
    w[0] = __ldg(p);
  } else if constexpr (N == 2) {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
    w[0] = v.x;
    w[1] = v.y;
  } else {
#pragma unroll
    for (int i = 0; i < N / 4; ++i) {
      const uint4 v = __ldg(reinterpret_cast<const uint4*>(p) + i);
      w[4 * i] = v.x;
      w[4 * i + 1] = v.y;
      w[4 * i + 2] = v.z;
      w[4 * i + 3] = v.w;
    }
  }
}

// Pair p (0..15) of a lane's 32-channel key chunk (B words): half2 of codes from bytes (v, v + 2) of
// word p / (16/B), code k of the byte; channels relative to the chunk start.
template <int B>
struct KeyPair {
  static constexpr int PPW = 16 / B, CPB = 8 / B;
  __host__ __device__ static constexpr int word(int p) { return p / PPW; }
  __host__ __device__ static constexpr int src(int p) { return (p % PPW) / CPB; }
  __host__ __device__ static constexpr int code(int p) { return (p % PPW) % CPB; }
  __host__ __device__ static constexpr int lo(int p) { return word(p) * (32 / B) + src(p) * CPB + code(p); }
  __host__ __device__ static constexpr int hi(int p) { return word(p) * (32 / B) + (2 + src(p)) * CPB + code(p); }
};

template <int B, int P>
__device__ __forceinline__ uint32_t key_pair(const uint32_t (&w)[B]) {
  using KP = KeyPair<B>;
  constexpr uint32_t mask = ((1u << B) - 1) << (B * KP::code(P));
  const uint32_t s = KP::src(P) ? (w[KP::word(P)] >> 8) : w[KP::word(P)];
  // 1024 + code·2^(b·k), minus 1024: the exact code·2^(b·k) (keeps the fp32 sums free of a bias)
  return h2u(__hadd2(u2h((s & (mask | (mask << 16))) | 0x64006400u), u2h(0xE400E400u)));
}

// Exact dequantized value pair of code k of byte-pair word y (two tokens): code·scale + min.
template <int B, int K>
__device__ __forceinline__ uint32_t value_pair(uint32_t y, __half2 s2, __half2 m2) {
  constexpr uint32_t mask = ((1u << B) - 1) << (B * K);
  constexpr int n = B * K;
  constexpr uint32_t mult = uint32_t((15 - n) << 10) * 0x10001u;            // 2^-n
  constexpr uint32_t neg = uint32_t(0x8000 | ((25 - n) << 10)) * 0x10001u;   // -1024·2^-n
  const uint32_t x = (y & (mask | (mask << 16))) | 0x64006400u;
  const __half2 c = __hfma2(u2h(x), u2h(mult), u2h(neg));
  return h2u(__hfma2(c, s2, m2));
}

struct PackedParams {
  const void* q;  // as AttnParams::q
  int64_t q_bs;
  int q_type;
  int Hq, Hkv, nrep;
  const uint32_t* k;  // codes [B, Hkv, T, 4·BK]
  int64_t k_bh;
  const __half* ks;  // [B, Hkv, T/gk, kD]
  const __half* km;
  int64_t ks_bh;
  int gk;
  const uint32_t* v;  // codes [B, Hkv, T, 4·BV]
  int64_t v_bh;
  const __half* vs;  // [B, Hkv, T, kD/gv]
  const __half* vm;
  int64_t vs_bh;
  int gv;
  int T;
  int tokens_per_split;  // multiple of kFastWarps·kFastTile
  int n_splits_total;
  float scale_log2;
  float* part_o;
  float* part_m;
  float* part_l;
};

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Bytes of one pipeline stage of one warp: the tile's key codes, value codes, value scales and
// mins (<= 8 groups per token), and the key scales and mins of the tile's group.
template <int BK, int BV>
__host__ __device__ constexpr int stage_bytes() {
  return 512 * BK + 512 * BV + 512 + 512 + 256 + 256;
}
constexpr int kRedBytes = kFastWarps * 8 * kD * 4;  // cross-warp merge buffer (aliases the stages)

template <int BK, int BV, int STAGES>
constexpr int packed_smem_bytes() {
  return STAGES > 0 ? std::max(kRedBytes, kFastWarps * STAGES * stage_bytes<BK, BV>()) : kRedBytes;
}

// STAGES = 0: each lane loads its tile data straight into registers. STAGES > 0: the warp copies
// whole tiles (contiguous rows) into shared memory with cp.async, STAGES - 1 tiles ahead.
template <int BK, int BV, int STAGES>
__global__ void __launch_bounds__(kFastWarps * 32) packed_attention_kernel(const PackedParams p) {
  constexpr int KW = BK;        // words of one lane's 32-channel key chunk
  constexpr int KROW = 4 * BK;  // words per key row
  constexpr int VW = BV / 2;    // words of one lane's 16-channel value chunk
  constexpr int VROW = 4 * BV;
  constexpr int VCPB = 8 / BV;  // value codes per byte
  constexpr int SB = stage_bytes<BK, BV>();
  constexpr int OFF_V = 512 * BK, OFF_VS = OFF_V + 512 * BV, OFF_VM = OFF_VS + 512, OFF_KS = OFF_VM + 512,
                OFF_KM = OFF_KS + 256;
  extern __shared__ __align__(16) unsigned char dyn_smem[];
  // q_s[h][t][c] = q[h][32t + c]: lane (g, t) reads q_s[g][t][c] for the same c in all lanes; the
  // row pitch 33 puts the 32 lanes on 32 different banks (a [8][128] array was a 32-way conflict).
  __shared__ float q_s[8][4][33];
  __shared__ float red_m[kFastWarps][8], red_l[kFastWarps][8];
  float(*red_o)[8][kD] = reinterpret_cast<float(*)[8][kD]>(dyn_smem);  // used after the token loop

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int hkv = blockIdx.y, b = blockIdx.z, nrep = p.nrep;
  const int64_t bh = int64_t(b) * p.Hkv + hkv;
  for (int i = threadIdx.x; i < 8 * kD; i += blockDim.x) {
    const int h = i / kD;
    q_s[h][(i % kD) / 32][i % 32] = h < nrep ? load_q(p.q, p.q_type, p.q_bs, b, (int64_t(hkv) * nrep + h) * kD + i % kD) : 0.f;
  }
  __syncthreads();

  const int tpw = p.tokens_per_split / kFastWarps;
  const int wb = blockIdx.x * p.tokens_per_split + warp * tpw;
  const int we = min(p.T, wb + tpw);
  const int vgroups = kD / p.gv, vgi = (16 * g) / p.gv;
  const uint32_t* kslab = p.k + bh * p.k_bh;  // [T, KROW]
  const uint32_t* vslab = p.v + bh * p.v_bh;  // [T, VROW]
  const __half* vs_slab = p.vs + bh * p.vs_bh;
  const __half* vm_slab = p.vm + bh * p.vs_bh;
  const __half* ks_slab = p.ks + bh * p.ks_bh;
  const __half* km_slab = p.km + bh * p.ks_bh;
  unsigned char* wsm = dyn_smem + warp * (STAGES > 0 ? STAGES : 1) * SB;

  // Whole tile (32 rows; T is a multiple of 32) into stage `st`: 16-byte chunks spread over lanes.
  auto issue = [&](int st, int t0) {
    unsigned char* d = wsm + st * SB;
    const unsigned char* ksrc = reinterpret_cast<const unsigned char*>(kslab + int64_t(t0) * KROW);
    const unsigned char* vsrc = reinterpret_cast<const unsigned char*>(vslab + int64_t(t0) * VROW);
#pragma unroll
    for (int j = 0; j < BK; ++j) cp_async16(d + 16 * (lane + 32 * j), ksrc + 16 * (lane + 32 * j));
#pragma unroll
    for (int j = 0; j < BV; ++j) cp_async16(d + OFF_V + 16 * (lane + 32 * j), vsrc + 16 * (lane + 32 * j));
    if (lane < 4 * vgroups) {  // 32 tokens x vgroups fp16 = 64·vgroups bytes each
      cp_async16(d + OFF_VS + 16 * lane, reinterpret_cast<const unsigned char*>(vs_slab + int64_t(t0) * vgroups) + 16 * lane);
      cp_async16(d + OFF_VM + 16 * lane, reinterpret_cast<const unsigned char*>(vm_slab + int64_t(t0) * vgroups) + 16 * lane);
    }
    const int64_t grp = t0 / p.gk;
    const __half* kss = lane < 16 ? ks_slab + grp * kD + 8 * lane : km_slab + grp * kD + 8 * (lane - 16);
    cp_async16(d + OFF_KS + 16 * lane, kss);  // KS then KM: 2 x 256 bytes
  };

  float m_run = -INFINITY, l_run = 0.f;
  float acc[8][4];
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[j][e] = 0.f;
  uint32_t ka[8][2];
#pragma unroll
  for (int s = 0; s < 8; ++s) ka[s][0] = ka[s][1] = 0u;
  float cr = 0.f;
  int cur_group = -1;

  const int ntiles = we > wb ? (we - wb + kFastTile - 1) / kFastTile : 0;
  if constexpr (STAGES > 0) {
#pragma unroll
    for (int i = 0; i < STAGES - 1; ++i) {
      if (i < ntiles) issue(i, wb + kFastTile * i);
      cp_async_commit();
    }
  }

  for (int it = 0; it < ntiles; ++it) {
    const int t0 = wb + kFastTile * it;
    uint32_t kw[4][KW];
    uint32_t vw[2][4][VW];
    __half vsc[2][4], vmn[2][4];
    uint32_t sv[16], mv[16];  // key scales / mins of the lane's 32 channels (fp16 pairs)
    const int grp = t0 / p.gk;  // a tile never straddles a group (gk % 32 == 0)
    const bool new_group = grp != cur_group;
    if constexpr (STAGES > 0) {
      __syncwarp();  // every lane is done with the stage about to be refilled
      const int nt = it + STAGES - 1;
      if (nt < ntiles) issue(nt % STAGES, wb + kFastTile * nt);
      cp_async_commit();
      cp_async_wait<STAGES - 1>();
      __syncwarp();
      const unsigned char* d = wsm + (it % STAGES) * SB;
#pragma unroll
      for (int blk = 0; blk < 4; ++blk)
#pragma unroll
        for (int w = 0; w < KW; ++w)
          kw[blk][w] = reinterpret_cast<const uint32_t*>(d)[(blk * 8 + g) * KROW + t * KW + w];
#pragma unroll
      for (int v = 0; v < 2; ++v)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int row = 16 * v + 2 * t + (i & 1) + (i >> 1) * 8;
#pragma unroll
          for (int w = 0; w < VW; ++w) vw[v][i][w] = reinterpret_cast<const uint32_t*>(d + OFF_V)[row * VROW + g * VW + w];
          vsc[v][i] = reinterpret_cast<const __half*>(d + OFF_VS)[row * vgroups + vgi];
          vmn[v][i] = reinterpret_cast<const __half*>(d + OFF_VM)[row * vgroups + vgi];
        }
      if (new_group)
#pragma unroll
        for (int w = 0; w < 16; ++w) {
          sv[w] = reinterpret_cast<const uint32_t*>(d + OFF_KS)[16 * t + w];
          mv[w] = reinterpret_cast<const uint32_t*>(d + OFF_KM)[16 * t + w];
        }
    } else {
#pragma unroll
      for (int blk = 0; blk < 4; ++blk) ldg_words(kslab + (t0 + blk * 8 + g) * KROW + t * KW, kw[blk]);
#pragma unroll
      for (int v = 0; v < 2; ++v)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int tok = t0 + 16 * v + 2 * t + (i & 1) + (i >> 1) * 8;
          ldg_words(vslab + tok * VROW + g * VW, vw[v][i]);
          vsc[v][i] = vs_slab[tok * vgroups + vgi];
          vmn[v][i] = vm_slab[tok * vgroups + vgi];
        }
      if (new_group) {
        ldg_words(reinterpret_cast<const uint32_t*>(ks_slab + int64_t(grp) * kD + 32 * t), sv);
        ldg_words(reinterpret_cast<const uint32_t*>(km_slab + int64_t(grp) * kD + 32 * t), mv);
      }
    }
    // ---- per-channel key statistics of a new group -> query fragments (q·s·2^-(b·k)) and Σ q·min
    if (new_group) {
      cur_group = grp;
      const float* qrow = q_s[g][t];
      float part = 0.f;
#pragma unroll
      for (int pp = 0; pp < 16; ++pp) {
        using KP = KeyPair<BK>;
        const int lo = KP::lo(pp), hi = KP::hi(pp);
        const float mult = 1.f / float(1 << (BK * KP::code(pp)));
        const float qa = qrow[lo], qb = qrow[hi];
        ka[pp / 2][pp % 2] = h2u(__floats2half2_rn(qa * half_at(sv, lo) * mult, qb * half_at(sv, hi) * mult));
        part = fmaf(qa, half_at(mv, lo), fmaf(qb, half_at(mv, hi), part));
      }
      part += __shfl_xor_sync(kFull, part, 1);
      part += __shfl_xor_sync(kFull, part, 2);
      cr = part;
    }
    // ---- scores: lane holds head g, tokens blk·8 + 2t + {0, 1}
    float s[4][2];
#pragma unroll
    for (int blk = 0; blk < 4; ++blk) {
      float d[4] = {0.f, 0.f, 0.f, 0.f};
#define KVX_KSTEP(S) \
  mma16816(d, ka[S][0], 0u, ka[S][1], 0u, key_pair<BK, 2 * S>(kw[blk]), key_pair<BK, 2 * S + 1>(kw[blk]));
      KVX_KSTEP(0) KVX_KSTEP(1) KVX_KSTEP(2) KVX_KSTEP(3) KVX_KSTEP(4) KVX_KSTEP(5) KVX_KSTEP(6) KVX_KSTEP(7)
#undef KVX_KSTEP
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int tok = t0 + blk * 8 + 2 * t + e;
        s[blk][e] = (tok < we && g < nrep) ? (d[e] + cr) * p.scale_log2 : -INFINITY;
      }
    }
    // ---- online softmax (per head g; the 4 lanes of a head agree on the max)
    float tmax = s[0][0];
#pragma unroll
    for (int blk = 0; blk < 4; ++blk) tmax = fmaxf(tmax, fmaxf(s[blk][0], s[blk][1]));
    tmax = fmaxf(tmax, __shfl_xor_sync(kFull, tmax, 1));
    tmax = fmaxf(tmax, __shfl_xor_sync(kFull, tmax, 2));
    const float m_new = fmaxf(m_run, tmax);
    const bool none = m_new == -INFINITY;
    const float corr = none ? 1.f : exp2f(m_run - m_new);
    m_run = m_new;
    uint32_t pb[4];
    float lsum = 0.f;
#pragma unroll
    for (int blk = 0; blk < 4; ++blk) {
      const float p0 = none ? 0.f : exp2f(s[blk][0] - m_new), p1 = none ? 0.f : exp2f(s[blk][1] - m_new);
      const __half2 h = __floats2half2_rn(p0, p1);
      pb[blk] = h2u(h);
      lsum += __low2float(h) + __high2float(h);  // normalize by what the products use
    }
    l_run = l_run * corr + lsum;
    // the output fragment holds heads 2t, 2t+1
    const float corr_a = __shfl_sync(kFull, corr, 8 * t), corr_b = __shfl_sync(kFull, corr, 8 * t + 4);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      acc[j][0] *= corr_a;
      acc[j][1] *= corr_b;
      acc[j][2] *= corr_a;
      acc[j][3] *= corr_b;
    }
    // ---- values: Oᵀ[16g + jj, head] over the 16 tokens of step v
#pragma unroll
    for (int v = 0; v < 2; ++v) {
      const __half2 s01 = __halves2half2(vsc[v][0], vsc[v][1]), m01 = __halves2half2(vmn[v][0], vmn[v][1]);
      const __half2 s89 = __halves2half2(vsc[v][2], vsc[v][3]), m89 = __halves2half2(vmn[v][2], vmn[v][3]);
      uint32_t x01[16], x89[16];
#pragma unroll
      for (int wi = 0; wi < VW; ++wi)
#pragma unroll
        for (int be = 0; be < 4; ++be) {
          const uint32_t sel = uint32_t(be | (be << 4) | ((4 + be) << 8) | ((4 + be) << 12));
          const uint32_t y01 = __byte_perm(vw[v][0][wi], vw[v][1][wi], sel);
          const uint32_t y89 = __byte_perm(vw[v][2][wi], vw[v][3][wi], sel);
          const int jb = wi * (32 / BV) + be * VCPB;
          x01[jb] = value_pair<BV, 0>(y01, s01, m01);
          x89[jb] = value_pair<BV, 0>(y89, s89, m89);
          if constexpr (VCPB > 1) {
            x01[jb + 1] = value_pair<BV, 1>(y01, s01, m01);
            x89[jb + 1] = value_pair<BV, 1>(y89, s89, m89);
          }
          if constexpr (VCPB > 2) {
            x01[jb + 2] = value_pair<BV, 2>(y01, s01, m01);
            x89[jb + 2] = value_pair<BV, 2>(y89, s89, m89);
            x01[jb + 3] = value_pair<BV, 3>(y01, s01, m01);
            x89[jb + 3] = value_pair<BV, 3>(y89, s89, m89);
          }
        }
#pragma unroll
      for (int j = 0; j < 8; ++j) mma16816(acc[j], x01[2 * j], x01[2 * j + 1], x89[2 * j], x89[2 * j + 1], pb[2 * v], pb[2 * v + 1]);
    }
  }
  if constexpr (STAGES > 0) cp_async_wait<0>();

  l_run += __shfl_xor_sync(kFull, l_run, 1);
  l_run += __shfl_xor_sync(kFull, l_run, 2);
  __syncthreads();  // the stages become the merge buffer
  if (t == 0 && g < nrep) {
    red_m[warp][g] = m_run;
    red_l[warp][g] = l_run;
  }
  const int h0 = 2 * t, h1 = 2 * t + 1;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int c = 16 * g + 2 * j;
    if (h0 < nrep) {
      red_o[warp][h0][c] = acc[j][0];
      red_o[warp][h0][c + 1] = acc[j][2];
    }
    if (h1 < nrep) {
      red_o[warp][h1][c] = acc[j][1];
      red_o[warp][h1][c + 1] = acc[j][3];
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < nrep * kD; i += blockDim.x) {
    const int h = i / kD, d = i % kD;
    float M = -INFINITY;
    for (int w = 0; w < kFastWarps; ++w) M = fmaxf(M, red_m[w][h]);
    float L = 0.f, O = 0.f;
    if (M != -INFINITY)
      for (int w = 0; w < kFastWarps; ++w) {
        const float f = exp2f(red_m[w][h] - M);
        L += red_l[w][h] * f;
        O += red_o[w][h][d] * f;
      }
    const int64_t slot_i = (int64_t(b) * p.Hq + int64_t(hkv) * nrep + h) * p.n_splits_total + blockIdx.x;
    p.part_o[slot_i * kD + d] = O;
    if (d == 0) {
      p.part_m[slot_i] = M;
      p.part_l[slot_i] = L;
    }
  }
}

// Resident blocks per SM of one instantiation (sets its dynamic shared memory limit first).
template <int BK, int BV, int STAGES>
int packed_blocks_per_sm() {
  static int n = [] {
    constexpr int smem = packed_smem_bytes<BK, BV, STAGES>();
    C10_CUDA_CHECK(cudaFuncSetAttribute(packed_attention_kernel<BK, BV, STAGES>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    int r = 0;
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&r, packed_attention_kernel<BK, BV, STAGES>,
                                                                 kFastWarps * 32, smem));
    return std::max(1, r);
  }();
  return n;
}

// KVX_PACKED_PIPE=1 selects the cp.async-pipelined variant where one is compiled (2/2, 2/4, 4/2, 4/4).
// Default off: on H100 (llama3-8b, B8, 32K) the register-load variant measured 168 vs 177 µs at 4/4
// (the pipelined one needs 174 registers: 2 blocks per SM instead of 3) and 159 vs 157 µs at 2/2.
bool packed_pipe() {
  static bool v = [] {
    const char* e = std::getenv("KVX_PACKED_PIPE");
    return e && std::atoi(e) != 0;
  }();
  return v;
}

template <int K, int V, int S>
int launch_packed_as(bool launch, dim3 grid, const PackedParams& p, cudaStream_t st) {
  const int n = packed_blocks_per_sm<K, V, S>();
  if (launch)
    packed_attention_kernel<K, V, S><<<grid, kFastWarps * 32, packed_smem_bytes<K, V, S>(), st>>>(p);
  return n;
}

// Dispatch over key/value bits: with launch = false only reports the resident blocks per SM.
int launch_packed(int bk, int bv, bool launch, dim3 grid, const PackedParams& p, cudaStream_t st) {
  const bool pipe = packed_pipe();
  switch (bk * 10 + bv) {
#define KVX_BITS(K, V, S) \
  case K * 10 + V: return (S > 0 && pipe) ? launch_packed_as<K, V, S>(launch, grid, p, st) : launch_packed_as<K, V, 0>(launch, grid, p, st);
    KVX_BITS(2, 2, 3) KVX_BITS(2, 4, 3) KVX_BITS(2, 8, 0) KVX_BITS(4, 2, 3) KVX_BITS(4, 4, 3) KVX_BITS(4, 8, 0)
    KVX_BITS(8, 2, 0) KVX_BITS(8, 4, 0) KVX_BITS(8, 8, 0)
#undef KVX_BITS
    default: throw error("fused decode attention: key/value bits {}/{} not supported", bk, bv);
  }
}

// Splits of the packed context: about one full wave of resident blocks, >= 2 tiles per warp.
int choose_packed_tokens_per_split(int64_t T, int64_t bh_blocks, int blocks_per_sm) {
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  constexpr int64_t unit = kFastWarps * kFastTile;
  int64_t want = std::max<int64_t>(1, int64_t(sms) * blocks_per_sm / bh_blocks);
  want = std::max<int64_t>(1, std::min<int64_t>(want, T / (2 * unit)));
  int64_t tps = (T + want - 1) / want;
  tps = (tps + unit - 1) / unit * unit;
  return int(tps);
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
  // q is read in place (float/half/bf16, any batch stride); one workspace holds the split partials
  at::Tensor qc = q;
  if (q.stride(2) != 1 || q.stride(1) != kD) qc = q.contiguous();
  int q_type = 0;
  if (qc.scalar_type() == at::kHalf) q_type = 1;
  else if (qc.scalar_type() == at::kBFloat16) q_type = 2;
  else if (qc.scalar_type() != at::kFloat) qc = qc.to(at::kFloat).contiguous();
  auto st = at::cuda::getCurrentCUDAStream();

  AttnParams base{};
  base.q = qc.data_ptr();
  base.q_bs = qc.stride(0);
  base.q_type = q_type;
  base.Hq = int(Hq);
  base.Hkv = int(Hkv);
  base.scale_log2 = float(scale * 1.4426950408889634);

  int n_q = 0, n_r = 0, tps_q = 0, tps_r = 0;
  if (Tq > 0) {
    if (k->group % kFastTile != 0 || !k->per_channel || v->per_channel || v->group % 16 != 0)
      throw error("fused decode attention: needs per-channel keys with group % 32 == 0 and per-token values");
    if (nrep > 8) throw error("fused decode attention: GQA ratio {} > 8 is not supported", nrep);
    if (k->codes.size(1) != Hkv || v->codes.size(2) != Tq || k->codes.size(3) != kD * k->bits / 32 ||
        v->codes.size(3) != kD * v->bits / 32)
      throw error("fused decode attention: packed keys/values do not match [B, Hkv, T, D·bits/32]");
    tps_q = choose_packed_tokens_per_split(Tq, B * Hkv, launch_packed(k->bits, v->bits, false, dim3(), {}, st));
    n_q = int((Tq + tps_q - 1) / tps_q);
  }
  if (R > 0) {
    check_dense(k_fp, "full-precision keys");
    check_dense(v_fp, "full-precision values");
    tps_r = choose_tokens_per_split(R, B * Hkv);
    n_r = int((R + tps_r - 1) / tps_r);
  }
  const int total = n_q + n_r;
  const int64_t n_part = B * Hq * total, n_out = B * Hq * kD;
  auto ws = at::empty({n_part * (kD + 2) + n_out}, at::TensorOptions().dtype(at::kFloat).device(q.device()));
  float* wsp = ws.data_ptr<float>();
  base.part_o = wsp;
  base.part_m = wsp + n_part * kD;
  base.part_l = wsp + n_part * (kD + 1);
  base.n_splits_total = total;

  if (n_q > 0) {
    auto cont = [](const at::Tensor& x) { return x.is_contiguous() ? x : x.contiguous(); };
    const auto kc = cont(k->codes), ksc = cont(k->scale), kmn = cont(k->minv);
    const auto vc = cont(v->codes), vsc = cont(v->scale), vmn = cont(v->minv);
    PackedParams p{};
    p.q = base.q;
    p.q_bs = base.q_bs;
    p.q_type = base.q_type;
    p.Hq = int(Hq);
    p.Hkv = int(Hkv);
    p.nrep = nrep;
    p.k = reinterpret_cast<const uint32_t*>(kc.data_ptr<int32_t>());
    p.k_bh = Tq * kc.size(3);
    p.ks = reinterpret_cast<const __half*>(ksc.data_ptr<at::Half>());
    p.km = reinterpret_cast<const __half*>(kmn.data_ptr<at::Half>());
    p.ks_bh = ksc.size(2) * kD;
    p.gk = k->group;
    p.v = reinterpret_cast<const uint32_t*>(vc.data_ptr<int32_t>());
    p.v_bh = Tq * vc.size(3);
    p.vs = reinterpret_cast<const __half*>(vsc.data_ptr<at::Half>());
    p.vm = reinterpret_cast<const __half*>(vmn.data_ptr<at::Half>());
    p.vs_bh = Tq * vsc.size(3);
    p.gv = v->group;
    p.T = int(Tq);
    p.tokens_per_split = tps_q;
    p.n_splits_total = total;
    p.scale_log2 = base.scale_log2;
    p.part_o = base.part_o;
    p.part_m = base.part_m;
    p.part_l = base.part_l;
    launch_packed(k->bits, v->bits, true, dim3(n_q, Hkv, B), p, st);
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
  combine_kernel<kD><<<dim3(B * Hq), kD, 0, st>>>(base.part_o, base.part_m, base.part_l, total, wsp + n_part * (kD + 2));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return ws.narrow(0, n_part * (kD + 2), n_out).view({B, Hq, kD});
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
