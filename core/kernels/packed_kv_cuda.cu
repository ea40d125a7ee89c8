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
    uint32_t w = code_of(to_f(xb[int64_t(t) * D]), lo, s, bits) << layout::key_bit(d, bits);
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
    const int64_t mi = (bh * (D / G) + d / G) * T_len + t;
    sc[mi] = __float2half(s);
    mn[mi] = __float2half(lo);
  }
  const int cpw = 32 / bits, W = D / cpw;
  const uint32_t w = word_or(code_of(v, lo, s, bits) << layout::plain_bit(d, bits), cpw);
  if (d % cpw == 0)  // each half-word where the layout puts it (the token pair's other row, maybe)
    for (int h = 0; h < 2; ++h) {
      const auto slot = layout::value_slot(t, T_len, d + h * cpw / 2, bits);
      reinterpret_cast<uint16_t*>(codes)[((bh * T_len + slot.row) * W + d / cpw) * 2 + slot.bit / 16] = uint16_t(w >> (16 * h));
    }
}

__global__ void dequantize_kernel(const uint32_t* __restrict__ codes, const __half* __restrict__ sc,
                                  const __half* __restrict__ mn, int64_t T_len, int D, int G, int bits,
                                  bool per_channel, float* __restrict__ out) {
  const int d = threadIdx.x;
  const int64_t t = blockIdx.x, bh = blockIdx.y;
  const int cpw = 32 / bits;
  const auto slot = layout::code_slot(t, T_len, d, bits, per_channel);
  const uint32_t q = (codes[(bh * T_len + slot.row) * (D / cpw) + d / cpw] >> slot.bit) & ((1u << bits) - 1);
  const int64_t mi = per_channel ? (bh * (T_len / G) + t / G) * D + d : (bh * (D / G) + d / G) * T_len + t;
  out[(bh * T_len + t) * D + d] = float(q) * __half2float(sc[mi]) + __half2float(mn[mi]);
}

// ---------------------------------------------------------------- tensor-core packed decode attention
// The mma layout is decode_mma.cuh's. A code becomes fp16 with one LOP3 and no conversion: word &
// mask, for code k of a byte (bits n = b·k up), is the fp16 subnormal code·2^(n-24), exact (the
// tensor cores multiply subnormals as they are). The decode is bound by instruction issue and
// latency, so every per-element operation after that LOP3 leaves the token loop:
//   keys    the query side carries the per-channel scale and the code's 2^-n (qs = q·2^-n·s, fp16:
//           one n per k-step, the query staged scaled); the scores come out times 2^-24, which the
//           softmax's scale takes back, plus the per-group constant Σ_c q_c·min_c from 4 mma when a
//           key group starts.
//   values  the token's scale multiplies the probabilities instead (B = P·s) when the mma's 8
//           columns can hold every value group of a token (NG groups: gv = 128, or gv = 64 with
//           nrep <= 4, the heads repeated per group). Then a row's accumulator scales back by
//           2^(24-n) at the end; the column sums of P·min (added at the end) run on the tensor
//           cores. Else the scale changes along the mma rows: (word & mask) | magic(n) reads as
//           2^(10-n) + code exactly, and values keep two more HFMA2-class operations: exact code,
//           then code·scale + min.
// fp16 pairs: the exponent under which mantissa bits n up read as 2^(10-n) + code, and -2^(10-n).
__host__ __device__ constexpr uint32_t code_magic2(int n) { return uint32_t((25 - n) << 10) * 0x10001u; }
__host__ __device__ constexpr uint32_t neg_bias2(int n) { return uint32_t(0x8000 | ((25 - n) << 10)) * 0x10001u; }

// Code k of each byte-pair half of y as the fp16 subnormal code·2^(n-24) (n = B·k), exactly.
template <int B, int K>
__device__ __forceinline__ uint32_t code_subnormal(uint32_t y) {
  constexpr uint32_t mask = ((1u << B) - 1) << (B * K);
  return y & (mask | (mask << 16));
}
// Code k of each byte-pair half of y as 2^(10-n) + code (n = B·k), exactly.
template <int B, int K>
__device__ __forceinline__ uint32_t value_code(uint32_t y) {
  constexpr uint32_t mask = ((1u << B) - 1) << (B * K);
  return and_or<mask | (mask << 16)>(y, code_magic2(B * K));
}

// Code index (of its byte) of key pair P (channels 2P, 2P + 1) of a lane's 32-channel chunk: the
// same for the two pairs of a k-step.
template <int B>
__host__ __device__ constexpr int key_code(int P) { return layout::key_pair_code(P % (16 / B)); }
// The two codes of key pair P as subnormals (code_subnormal), from the chunk's B words.
template <int B, int P>
__device__ __forceinline__ uint32_t key_pair(const uint32_t (&w)[B]) {
  constexpr int PPW = 16 / B;
  const uint32_t s = P % 2 ? (w[P / PPW] >> 8) : w[P / PPW];  // byte 1 of the half-words: pairs pw odd
  return code_subnormal<B, key_code<B>(P)>(s);
}
template <int B>
__host__ __device__ constexpr float value_unit(int k) {
  return float(1 << (24 - B * k));
}

// Dequantized value pair code·scale + min (several value groups per token).
template <int B, int K>
__device__ __forceinline__ uint32_t value_pair(uint32_t y, __half2 s2, __half2 m2) {
  const __half2 c = __hadd2(u2h(value_code<B, K>(y)), u2h(neg_bias2(B * K)));
  return h2u(__hfma2(c, s2, m2));
}

struct PackedParams {
  const void* q;  // [B, Hq, kD], batch stride q_bs, dtype q_type (see load_q_run)
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
  const __half* vs;  // [B, Hkv, kD/gv, T]
  const __half* vm;
  int64_t vs_bh;
  int gv;
  int T;                 // multiple of kFastTile
  DenseSeg tail;         // full-precision tail [B, Hkv, R, kD] (R = 0: none)
  int tokens_per_split;  // multiple of kFastWarps·kFastTile
  float scale_log2;
  SplitOutput out;
};

// Each warp streams its tiles through a ring of shared-memory stages filled by cp.async, so that the
// loads of the next tiles overlap the math of this one without holding registers (a 2-bit tile is
// 2 KB: with a tile's loads issued at its start, 16 warps per SM kept too few bytes in flight).
// One stage is one tile of one warp:
//   [key codes 32 x 4BK words][value codes 32 x 4BV words][value scales 32 x vg][value mins]
//   [key scales kD][key mins kD] (the last two filled only where the warp enters a key group)
__host__ __device__ constexpr int packed_stage_bytes(int bk, int bv, int vg) { return 512 * (bk + bv) + 128 * vg + 512; }
// Stages per warp: about 8-10 KB in flight, within 4 blocks per SM.
__host__ __device__ constexpr int packed_stages(int bk, int bv) { return bk + bv <= 4 ? 4 : bk + bv <= 6 ? 3 : 2; }

// A tile's value codes lie in the stage as 16-byte chunks n = token·BV + (chunk of the row), chunk n
// at n ^ value_chunk_xor<BV>(n): a value load of a warp (tokens 2t + {0, 1} + 8·{0, 1}, channel
// chunk by g) then hits every bank once; in row order the four t, rows 2·16·BV bytes apart, shared
// banks (2-way conflicts at 2 bits, 4-way at 4 and 8). The XOR depends on token bits 1-2 only.
template <int BV>
__host__ __device__ constexpr int value_chunk_xor(int n) {
  const int tok = n / BV;
  return BV == 2 ? 2 * ((tok >> 2) & 1) : BV == 4 ? 4 * ((tok >> 1) & 1) + 2 * ((tok >> 2) & 1) : 2 * ((tok >> 1) & 3);
}

// One lane's share of the cp.async copies of a warp's tiles, a tile at a time.
template <int BK, int BV>
struct TileCopier {
  const char *k, *v, *meta0, *meta1, *kmeta;
  int n_meta;  // 16-byte chunks of value scales and mins this lane copies (0..2)
  // where this lane's value chunk of 512-byte block i goes, less where it would go unswizzled
  // (the same for every block at BV <= 4; by the block's parity at 8)
  int vdelta[BV == 8 ? 2 : 1];
  __device__ TileCopier(const PackedParams& p, int64_t bh, int wb, int vg, int lane) {
#pragma unroll
    for (int i = 0; i < (BV == 8 ? 2 : 1); ++i) {
      const int n = 32 * i + lane;
      vdelta[i] = 16 * ((n ^ value_chunk_xor<BV>(n)) - n);
    }
    k = reinterpret_cast<const char*>(p.k + bh * p.k_bh + int64_t(wb) * 4 * BK) + 16 * lane;
    v = reinterpret_cast<const char*>(p.v + bh * p.v_bh + int64_t(wb) * 4 * BV) + 16 * lane;
    // chunk n of a tile's statistics: 4 per value group of its scales (group-major, 32 tokens each),
    // then as many of its mins
    const int mc = 4 * vg;
    auto meta_src = [&](int n) {
      const int c = n < mc ? n : n - mc;
      return reinterpret_cast<const char*>((n < mc ? p.vs : p.vm) + bh * p.vs_bh + int64_t(c / 4) * p.T + wb + 8 * (c % 4));
    };
    meta0 = meta_src(lane);
    meta1 = meta_src(lane + 32);
    n_meta = (lane < 2 * mc) + (lane + 32 < 2 * mc);
    kmeta = reinterpret_cast<const char*>((lane < 16 ? p.ks : p.km) + bh * p.ks_bh + int64_t(wb / p.gk) * kD) + 16 * (lane % 16);
  }
  // dst: the stage's shared address plus 16·lane; `on`: the tile lies in the warp's range (else the
  // pointers move and nothing is read). The pointers move first and the copies read behind them
  // (copying first, ptxas moved each pointer to a fresh register pair every tile).
  __device__ void copy(uint32_t dst, int vg, bool group_start, bool on) {
    k += 512 * BK;
    v += 512 * BV;
    meta0 += 64;
    meta1 += 64;
#pragma unroll
    for (int i = 0; i < BK; ++i) cp_async16(dst + 512 * i, k + 512 * (i - BK), on);
    dst += 512 * BK;
#pragma unroll
    for (int i = 0; i < BV; ++i) cp_async16(dst + 512 * i + vdelta[BV == 8 ? i & 1 : 0], v + 512 * (i - BV), on);
    dst += 512 * BV;
    cp_async16(dst, meta0 - 64, on && n_meta > 0);
    cp_async16(dst + 512, meta1 - 64, on && n_meta > 1);
    cp_async16(dst + 128 * vg, kmeta, on && group_start);
    if (group_start) kmeta += 2 * kD;
  }
};

// Key words of tokens g + 8·blk of a tile (rows of 4·BK words), this lane's 32 channels.
template <int BK>
__device__ __forceinline__ void load_tile_keys(const uint32_t* kb, int blk, int g, int t, uint32_t (&w)[BK]) {
  lds_words(kb + (g + 8 * blk) * 4 * BK + t * BK, w);
}
// Word offsets in a tile's value codes of this lane's words of tokens 2t and 2t + 1 (channels
// 16g..16g+15), swizzled as value_chunk_xor says; tokens 16v + 8h later are whole chunks further.
template <int BV>
__device__ __forceinline__ void value_word_offsets(int g, int t, int (&off)[2]) {
  constexpr int VW = BV / 2;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int n = (2 * t + r) * BV + g * VW / 4;
    off[r] = 4 * (n ^ value_chunk_xor<BV>(n)) + g * VW % 4;
  }
}
// Value words of step v of a tile: tokens 16v + 2t + {0, 1, 8, 9}, channels 16g..16g+15.
template <int BV>
__device__ __forceinline__ void load_value_words(const uint32_t* vb, int v, const int (&off)[2], uint32_t (&w)[4][BV / 2]) {
#pragma unroll
  for (int r = 0; r < 4; ++r) lds_words(vb + (16 * v + 8 * (r >> 1)) * 4 * BV + off[r & 1], w[r]);
}
// The fp16 pair (tokens 16v + 8h + 2t, 16v + 8h + 2t + 1) of value group vgi from a tile's value
// scales or mins ([groups][32 tokens]).
__device__ __forceinline__ uint32_t value_stat_pair(const __half* x, int v, int h, int t, int vgi) {
  return *reinterpret_cast<const uint32_t*>(x + 32 * vgi + 16 * v + 8 * h + 2 * t);
}

// NG: value groups per token whose scale multiplies the probabilities instead of the codes (0: none,
// the codes are dequantized). The mma has 8 columns; with NG groups the nrep <= 8/NG heads repeat
// once per group (column c = head + (8/NG)·group), every column's probabilities take that group's
// value scale, and a lane keeps the columns of its channels' group.
template <int BK, int BV, int NG>
__global__ void __launch_bounds__(kFastWarps * 32, 4) packed_attention_kernel(const PackedParams p) {
  allow_dependent_launch();
  constexpr int KW = BK;        // words of one lane's 32-channel key chunk
  constexpr int VW = BV / 2;    // words of one lane's 16-channel value chunk
  constexpr int VCPB = 8 / BV;  // value codes per byte
  constexpr int S = packed_stages(BK, BV);
  constexpr bool FOLD = NG > 0;
  // Query fragments of lane (g, t) in natural pairs: word p = half2(q[h][32t + 2p], q[h][32t + 2p + 1]);
  // qh_s: times the 2^-n of the key codes they meet
  __shared__ __align__(16) QueryFragments qf_s, qh_s;
  extern __shared__ __align__(16) unsigned char stages[];  // the warps' rings; then the block merge

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int hkv = blockIdx.y, b = blockIdx.z, nrep = p.nrep;
  const int nh = FOLD ? 8 / NG : 8;  // columns per value group
  const int64_t bh = int64_t(b) * p.Hkv + hkv;
  stage_query<NaturalPair>(qf_s, p.q, p.q_type, p.q_bs, b, hkv, nrep, nh, &qh_s,
                           [](int pp) { return 1.f / float(1 << (BK * key_code<BK>(pp))); });

  const int vg = FOLD ? NG : kD / p.gv;             // value groups per token
  const int vgi = FOLD ? g / nh : (16 * g) / p.gv;  // the group of the scales this lane reads
  const int tpw = p.tokens_per_split / kFastWarps;
  const int wb = blockIdx.x * p.tokens_per_split + warp * tpw;
  const int n_tiles = max(0, min(p.T - wb, tpw) / kFastTile);

  int voff[2];
  value_word_offsets<BV>(g, t, voff);
  const int sb = packed_stage_bytes(BK, BV, vg);
  unsigned char* ring = stages + warp * S * sb;
  const uint32_t ring_lane = uint32_t(__cvta_generic_to_shared(ring)) + 16 * lane;  // this lane's copy target
  TileCopier<BK, BV> copier(p, bh, wb, vg, lane);
  // Tile i of the warp starts a key group where the group's first token is the tile's (key groups
  // are 2^n tiles, host-checked), and tile 0 takes the stats of the group it is in.
  const int gmask = p.gk / kFastTile - 1, tile0 = wb / kFastTile;
  auto starts_group = [=](int i) { return i == 0 || ((tile0 + i) & gmask) == 0; };
#pragma unroll
  for (int i = 0; i < S - 1; ++i) {
    copier.copy(ring_lane + i * sb, vg, starts_group(i), i < n_tiles);
    cp_async_commit();
  }

  // this lane's columns are 2t and 2t + 1 (of every accumulator it holds)
  float m_run[2] = {-INFINITY, -INFINITY};
  float acc[8][4];
  ColumnSums cs;
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[j][e] = 0.f;
  uint32_t ka[8][2];          // B fragments of q·2^-n·s, k-step S
  float crs[2] = {0.f, 0.f};  // per-group score constant of each column, times scale_log2
  const float key_scale_log2 = p.scale_log2 * 0x1p24f;  // the key codes are code·2^(n-24)

  int read_off = 0, write_off = (S - 1) * sb;  // ring bytes of the tile read next / copied next
  // Two tiles per pass: ptxas then schedules one tile's loads and code extraction against the other's
  // (k2v2 67.6 -> 66.2 µs, H200).
#pragma unroll 2
  for (int i = 0; i < n_tiles; ++i) {
    cp_async_wait<S - 2>();  // tile i has landed (this lane's part; after the barrier everyone's)
    __syncwarp();            // ... and every lane is done with tile i - 1, whose stage is refilled now
    copier.copy(ring_lane + write_off, vg, ((tile0 + i + S - 1) & gmask) == 0, i + S - 1 < n_tiles);  // never tile 0
    cp_async_commit();
    const uint32_t* kb = reinterpret_cast<const uint32_t*>(ring + read_off);
    const uint32_t* vb = kb + 128 * BK;
    const __half* vsb = reinterpret_cast<const __half*>(vb + 128 * BV);
    const __half* vmb = vsb + 32 * vg;
    const uint32_t* ksb = reinterpret_cast<const uint32_t*>(vmb + 32 * vg);
    write_off = read_off;
    read_off = read_off + sb == S * sb ? 0 : read_off + sb;
    // words are read from the stage where they are used (a shared-memory load is short, registers few)
    uint32_t kw[4][KW];             // tokens g + 8·blk, this lane's 32 channels
    uint32_t vw[2][4][VW];          // step v: tokens 16v + 2t + {0, 1, 8, 9}, channels 16g..16g+15
    // value scales of the pairs (2t, 2t+1), (2t+8, 2t+9) of step v, group vgi; the mins likewise, or
    // with FOLD those of pair h = g % 2 only (the B column of the sums of P·min)
    uint32_t vs2[2][2], vm2[2][2];

    // ---- a new key group: query fragments q·2^-n·s and the constant Σ q·min
    if (starts_group(i)) {
      // natural pairs (channels 2j, 2j + 1 of the lane's 32): the scaled query, then the query; the
      // scales as they lie in the stage, and the mins of the pairs 4i + 2(g & 1), 4i + 2(g & 1) + 1
      // (this lane's B column below)
      uint32_t qn[16], sv[16], mv[4][2];
      load_query(qh_s, qn);
      lds_words(ksb + 16 * t, sv);
#pragma unroll
      for (int j = 0; j < 16; ++j) ka[j / 2][j % 2] = h2u(__hmul2(u2h(qn[j]), u2h(sv[j])));
      load_query(qf_s, qn);
#pragma unroll
      for (int I = 0; I < 4; ++I) lds_words(ksb + 64 + 16 * t + 4 * I + 2 * (g & 1), mv[I]);
      // Row g of A is column g's query (pairs 4i, 4i + 1 in rows g, 4i + 2, 4i + 3 in rows g + 8:
      // load_query's quad order) against B = the mins, even columns those of rows g, odd ones those of
      // rows g + 8: column g's Σ q·min is D[g][2t] + D[g + 8][2t + 1] of the lanes t = 0.
      float dm[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int I = 0; I < 4; ++I) mma16816(dm, qn[4 * I], qn[4 * I + 2], qn[4 * I + 1], qn[4 * I + 3], mv[I][0], mv[I][1]);
      const float cg = dm[0] + dm[3];
      crs[0] = __shfl_sync(kFullMask, cg, 4 * (2 * t)) * p.scale_log2;
      crs[1] = __shfl_sync(kFullMask, cg, 4 * (2 * t + 1)) * p.scale_log2;
    }
    // ---- scores Sᵀ[tok, col] = d·2^24·scale_log2 + crs[col], 16 tokens per mma (A = key codes, B = q·2^-n·s)
    float d[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
    for (int bb = 0; bb < 2; ++bb) {
      load_tile_keys<BK>(kb, 2 * bb, g, t, kw[2 * bb]);
      load_tile_keys<BK>(kb, 2 * bb + 1, g, t, kw[2 * bb + 1]);
#define KVX_KSTEP(S)                                                                                    \
  mma16816(d[bb], key_pair<BK, 2 * S>(kw[2 * bb]), key_pair<BK, 2 * S>(kw[2 * bb + 1]),                     \
           key_pair<BK, 2 * S + 1>(kw[2 * bb]), key_pair<BK, 2 * S + 1>(kw[2 * bb + 1]), ka[S][0], ka[S][1]);
      KVX_KSTEP(0) KVX_KSTEP(1) KVX_KSTEP(2) KVX_KSTEP(3) KVX_KSTEP(4) KVX_KSTEP(5) KVX_KSTEP(6) KVX_KSTEP(7)
#undef KVX_KSTEP
    }
    // The scales load before the softmax, whose rescale branch the compiler does not move loads
    // across (their latency then overlaps the softmax).
#pragma unroll
    for (int v = 0; v < 2; ++v)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        vs2[v][h] = value_stat_pair(vsb, v, h, t, vgi);
        if (!FOLD || h == 0) vm2[v][h] = value_stat_pair(vmb, v, FOLD ? g & 1 : h, t, vgi);
      }
    uint32_t pb[4];
    online_softmax<FOLD>(d, key_scale_log2, crs, pb, m_run, cs, acc);
    if constexpr (FOLD) {  // the column sums of P·min; B = P·scale
      weighted_column_total(cs.m, pb[0], pb[1], pb[2], pb[3], vm2[0][0], vm2[1][0]);
#pragma unroll
      for (int i = 0; i < 4; ++i) pb[i] = h2u(__hmul2(u2h(pb[i]), u2h(vs2[i / 2][i % 2])));
    }
    // ---- values: Oᵀ[16g + jj, col] over the 16 tokens of step v
#pragma unroll
    for (int v = 0; v < 2; ++v) {
      load_value_words<BV>(vb, v, voff, vw[v]);
      const uint32_t b0 = pb[2 * v], b1 = pb[2 * v + 1];
      uint32_t x01[16], x89[16];
#pragma unroll
      for (int wi = 0; wi < VW; ++wi)
#pragma unroll
        for (int be = 0; be < 4; ++be) {
          // byte be of the two tokens' words in the low bytes of the half-words: the pair's row be / 2
          // holds bytes (0, 1) or (2, 3) of both (packed_layout.h)
          const uint32_t y01 = vw[v][be >> 1][wi] >> (8 * (be & 1));
          const uint32_t y89 = vw[v][2 + (be >> 1)][wi] >> (8 * (be & 1));
          const int jb = wi * (32 / BV) + be * VCPB;
#define KVX_VCODE(K)                                                       \
  if constexpr (FOLD) {                                                    \
    x01[jb + K] = code_subnormal<BV, K>(y01);                              \
    x89[jb + K] = code_subnormal<BV, K>(y89);                              \
  } else {                                                                 \
    x01[jb + K] = value_pair<BV, K>(y01, u2h(vs2[v][0]), u2h(vm2[v][0]));  \
    x89[jb + K] = value_pair<BV, K>(y89, u2h(vs2[v][1]), u2h(vm2[v][1]));  \
  }
          KVX_VCODE(0)
          if constexpr (VCPB > 1) { KVX_VCODE(1) }
          if constexpr (VCPB > 2) { KVX_VCODE(2) KVX_VCODE(3) }
#undef KVX_VCODE
        }
#pragma unroll
      for (int j = 0; j < 8; ++j) mma16816(acc[j], x01[2 * j], x01[2 * j + 1], x89[2 * j], x89[2 * j + 1], b0, b1);
    }
  }
  if constexpr (FOLD)  // rows hold Σ code·2^(n-24)·P·s: back to Σ code·P·s (powers of 2, exact)
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[j][e] *= value_unit<BV>((2 * j + e / 2) % VCPB);
  // ---- the full-precision tail (KVQ's residual) in the same launch: the last warp of the last split
  // (whose packed range the host shortened to make room) takes its 32-token tiles, in fp16 on the
  // tensor cores against q as is (bf16 rows convert exactly).
  if (p.tail.R > 0 && blockIdx.x == gridDim.x - 1 && warp == kFastWarps - 1) {
    uint32_t qf[16];
    load_query(qf_s, qf);
    for (int r0 = 0; r0 < p.tail.R; r0 += kFastTile)
      attend_dense_tile<NaturalPair, FOLD>(p.tail, bh, r0, qf, p.scale_log2, m_run, cs, acc);
  }
  if constexpr (FOLD) {  // + Σ P·min
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float pm = split_column_value(cs.m, 2 * t + h, nh);
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) acc[j][2 * e + h] += pm;
    }
  }
  __syncthreads();  // the merge reuses the rings
  store_split(*reinterpret_cast<SplitMerge*>(stages), m_run, cs, acc, nrep, nh, b, hkv, p.Hq, blockIdx.x, p.out);
}

// ---------------------------------------------------------------- full-precision decode attention
// A full-precision cache alone (no packed tokens yet, or the fp16-fused baseline of `kvx bench
// decode`): the packed kernel's tail tiles (attend_dense_tile) over the whole context, split-K.
struct DenseParams {
  const void* q;  // as PackedParams::q
  int64_t q_bs;
  int q_type;
  int Hq, Hkv, nrep;
  DenseSeg kv;           // the cache [B, Hkv, T, kD]
  int tokens_per_split;  // multiple of kFastWarps·kFastTile
  float scale_log2;
  SplitOutput out;
};

__global__ void __launch_bounds__(kFastWarps * 32) dense_attention_kernel(const DenseParams p) {
  allow_dependent_launch();
  __shared__ __align__(16) QueryFragments qf_s;
  __shared__ SplitMerge merge;
  const int warp = threadIdx.x / 32, hkv = blockIdx.y, b = blockIdx.z;
  stage_query<NaturalPair>(qf_s, p.q, p.q_type, p.q_bs, b, hkv, p.nrep, 8);
  uint32_t qf[16];
  load_query(qf_s, qf);
  const int tpw = p.tokens_per_split / kFastWarps, r_begin = blockIdx.x * p.tokens_per_split + warp * tpw;
  DenseSeg kv = p.kv;
  kv.R = min(kv.R, r_begin + tpw);  // attend_dense_tile masks tokens from R on
  float m_run[2] = {-INFINITY, -INFINITY};
  float acc[8][4] = {};
  ColumnSums cs;
  for (int r0 = r_begin; r0 < kv.R; r0 += kFastTile)
    attend_dense_tile<NaturalPair, false>(kv, int64_t(b) * p.Hkv + hkv, r0, qf, p.scale_log2, m_run, cs, acc);
  store_split(merge, m_run, cs, acc, p.nrep, 8, b, hkv, p.Hq, blockIdx.x, p.out);
}

// Dynamic shared memory of a launch with vg value groups per token.
constexpr int packed_smem_bytes(int bk, int bv, int vg) {
  return std::max<int>(kFastWarps * packed_stages(bk, bv) * packed_stage_bytes(bk, bv, vg), int(sizeof(SplitMerge)));
}

using PackedKernel = void (*)(PackedParams);

// The instantiation for key/value bits K/V and NG folded value groups, allowed the shared memory it
// can need (at 8 value groups per token) on its first use.
template <int K, int V, int NG>
PackedKernel packed_kernel() {
  static const PackedKernel f = [] {
    const PackedKernel k = packed_attention_kernel<K, V, NG>;
    C10_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, packed_smem_bytes(K, V, kD / 16)));
    C10_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout, int(cudaSharedmemCarveoutMaxShared)));
    return k;
  }();
  return f;
}

// Dispatch over key/value bits and the folded value groups ng.
PackedKernel packed_kernel(int bk, int bv, int ng) {
  switch (bk * 10 + bv) {
#define KVX_BITS(K, V) \
  case K * 10 + V: return ng == 1 ? packed_kernel<K, V, 1>() : ng == 2 ? packed_kernel<K, V, 2>() : packed_kernel<K, V, 0>();
    KVX_BITS(2, 2) KVX_BITS(2, 4) KVX_BITS(2, 8) KVX_BITS(4, 2) KVX_BITS(4, 4) KVX_BITS(4, 8)
    KVX_BITS(8, 2) KVX_BITS(8, 4) KVX_BITS(8, 8)
#undef KVX_BITS
    default: throw error("fused decode attention: key/value bits {}/{} not supported", bk, bv);
  }
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
  out.scale = per_channel ? at::empty({B, H, T / G, D}, opt.dtype(at::kHalf)) : at::empty({B, H, D / G, T}, opt.dtype(at::kHalf));
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
  if (nrep > 8) throw error("fused decode attention: GQA ratio {} > 8 is not supported", nrep);
  const QueryRef qr = query_ref(q);
  auto st = at::cuda::getCurrentCUDAStream();
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;

  // value groups per token, and how many of them fold into the mma's columns (the heads repeat once
  // per group, so nrep·groups <= 8)
  const int vg = Tq > 0 ? int(kD / v->group) : 1;
  const int ng = vg == 1 ? 1 : (vg == 2 && nrep <= 4 ? 2 : 0);
  int tps = 0;
  PackedKernel kernel = nullptr;  // with its dynamic shared memory
  int smem = 0;
  if (Tq > 0) {
    if (k->group % kFastTile != 0 || (k->group & (k->group - 1)) != 0 || !k->per_channel || v->per_channel ||
        v->group % 16 != 0)
      throw error("fused decode attention: needs per-channel keys in groups of 32·2^n tokens and per-token values");
    if (k->codes.size(1) != Hkv || v->codes.size(2) != Tq || k->codes.size(3) != kD * k->bits / 32 ||
        v->codes.size(3) != kD * v->bits / 32)
      throw error("fused decode attention: packed keys/values do not match [B, Hkv, T, D·bits/32]");
    if (Tq % kFastTile != 0) throw error("fused decode attention: {} packed tokens are not a multiple of {}", Tq, kFastTile);
    // beside packed tokens the full-precision tail joins the packed launch (a launch of its own cost
    // more than the tail's reading: 20 µs of 125 on H200 at llama3-8b, B8, 32K, R 64)
    kernel = packed_kernel(k->bits, v->bits, ng);
    smem = packed_smem_bytes(k->bits, v->bits, vg);
    tps = split_tokens(Tq, R, B * Hkv, sms * resident_blocks(kernel, smem));
  } else {
    tps = split_tokens(R, 0, B * Hkv, sms * resident_blocks(dense_attention_kernel, 0));
  }
  DenseSeg tail{};
  if (R > 0) {
    check_dense(k_fp, "full-precision keys");
    check_dense(v_fp, "full-precision values");
    if (k_fp.scalar_type() != v_fp.scalar_type() || (k_fp.scalar_type() != at::kHalf && k_fp.scalar_type() != at::kBFloat16))
      throw error("fused decode attention: full-precision tail must be float16 or bfloat16");
    tail = {k_fp.data_ptr(), v_fp.data_ptr(), k_fp.stride(1), v_fp.stride(1), int(R), k_fp.scalar_type() == at::kBFloat16};
  }
  const int n_splits = int(((Tq > 0 ? Tq : R) + tps - 1) / tps);
  const float scale_log2 = float(scale * 1.4426950408889634);
  const dim3 grid(n_splits, Hkv, B);

  if (Tq > 0) {
    // cp.async moves 16-byte chunks: contiguous tensors on 16-byte boundaries, as quantize_pack and
    // concat return them (a copy here would be made again on every decode step)
    auto cont = [](const at::Tensor& x, const char* what) {
      if (!x.is_contiguous() || reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 != 0)
        throw error("fused decode attention: packed {} must be contiguous and 16-byte aligned (as quantize_pack and "
                    "concat return them)", what);
      return x;
    };
    const auto kc = cont(k->codes, "key codes"), ksc = cont(k->scale, "key scales"), kmn = cont(k->minv, "key mins");
    const auto vc = cont(v->codes, "value codes"), vsc = cont(v->scale, "value scales"), vmn = cont(v->minv, "value mins");
    PackedParams p{};
    p.q = qr.q.data_ptr();
    p.q_bs = qr.q.stride(0);
    p.q_type = qr.type;
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
    p.vs_bh = vsc.size(2) * Tq;
    p.gv = v->group;
    p.T = int(Tq);
    p.tail = tail;
    p.tokens_per_split = tps;
    p.scale_log2 = scale_log2;
    return launch_split_k(kernel, p, grid, smem, Hq, q.device(), st);
  }
  const DenseParams p{qr.q.data_ptr(), qr.q.stride(0), qr.type, int(Hq), int(Hkv), nrep, tail, tps, scale_log2, {}};
  return launch_split_k(dense_attention_kernel, p, grid, 0, Hq, q.device(), st);
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
