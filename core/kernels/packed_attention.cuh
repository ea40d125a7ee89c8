// The fused attention kernel over packed_kv.h's layout (internal: included by the .cu files of
// core/kernels). Its instantiations are spread over packed_attention_k{2,4,8}.cu (one file per key
// bit width, compiled in parallel); packed_kv_cuda.cu launches them through packed_kernel().
//
// The mma layout is decode_mma.cuh's. A code becomes fp16 with one LOP3 and no conversion: word &
// mask, for code k of a byte (bits n = b·k up), is the fp16 subnormal code·2^(n-24), exact (the
// tensor cores multiply subnormals as they are). The attention is bound by instruction issue and
// latency, so every per-element operation after that LOP3 leaves the token loop:
//   keys    the query side carries the code's 2^-n (qh = q·2^-n, fp16: one n per k-step, the query
//           staged scaled); the scores come out times 2^-24, which the softmax's scale takes back.
//           Per-channel groups: the query side carries the per-channel scale too (q·2^-n·s), and the
//           per-group constant Σ_c q_c·min_c comes from 4 mma when a key group starts. Per-token
//           groups (NGK per token; channels permuted so that a k-step lies in one group,
//           packed_layout.h): one accumulator per group, scaled per token after the mma,
//           score = Σ_g s_tg·(q·code)_g + min_tg·Σ_(c in g) q_c.
//   values  the token's scale multiplies the probabilities instead (B = P·s) when the mma's 8
//           columns can hold every value group of a token (NG groups: gv = 128, or gv = 64 with
//           <= 4 rows, the rows repeated per group). Then a row's accumulator scales back by
//           2^(24-n) at the end; the column sums of P·min (added at the end) run on the tensor
//           cores. Else the scale changes along the mma rows: (word & mask) | magic(n) reads as
//           2^(10-n) + code exactly, and values keep two more HFMA2-class operations: exact code,
//           then code·scale + min.
#pragma once
#include <ATen/cuda/CUDAContext.h>
#include <cuda_fp16.h>

#include "core/kernels/decode_mma.cuh"
#include "core/kernels/packed_layout.h"

namespace kvx::kernels::cuda {

// Parameters of one launch (outside the unnamed namespace: one type for every .cu file).
struct PackedParams {
  const void* q;  // rows [B·Hkv·rows, kD], dtype q_type (see load_q_run)
  int q_type;
  int Hkv;
  int rows;     // query rows per KV head: GQA heads x chunk tokens
  int qgroups;  // row groups per KV head (blockIdx.z = b·qgroups + group)
  int chunk;    // chunk tokens (row r is chunk token r % chunk)
  const uint32_t* k;  // codes [B, Hkv, T, 4·BK], k_bh words between (b, h)
  int64_t k_bh;
  const __half* ks;  // per-channel: [B, Hkv, T/gk, kD]; per-token: [B, Hkv, kD/gk, T] (row stride ks_row)
  const __half* km;
  int64_t ks_bh, ks_row;
  int gk;
  const uint32_t* v;  // codes [B, Hkv, T, 4·BV]
  int64_t v_bh;
  const __half* vs;  // [B, Hkv, kD/gv, T] (row stride vs_row)
  const __half* vm;
  int64_t vs_bh, vs_row;
  int gv;
  int T;                 // multiple of kFastTile (and of gk for per-channel keys)
  DenseSeg tail[2];      // full-precision segments: sinks, then the rest with the chunk's own tokens
  int tokens_per_split;  // multiple of kFastWarps·kFastTile
  float scale_log2;
  SplitOutput out;
};
using PackedKernel = void (*)(PackedParams);

// Each warp streams its tiles through a ring of shared-memory stages filled by cp.async, so that the
// loads of the next tiles overlap the math of this one without holding registers (a 2-bit tile is
// 2 KB: with a tile's loads issued at its start, 16 warps per SM kept too few bytes in flight).
// One stage is one tile of one warp:
//   [key codes 32 x 4BK words][value codes 32 x 4BV words][value scales 32 x vg][value mins]
//   [key statistics, 512 bytes]: per-channel keys, [scales kD][mins kD] filled only where the warp
//   enters a key group; per-token keys, [scales: groups x 32 tokens][mins] of every tile.
__host__ __device__ constexpr int packed_stage_bytes(int bk, int bv, int vg) { return 512 * (bk + bv) + 128 * vg + 512; }
// Stages per warp: about 8-10 KB in flight, within 4 blocks per SM.
__host__ __device__ constexpr int packed_stages(int bk, int bv) { return bk + bv <= 4 ? 4 : bk + bv <= 6 ? 3 : 2; }
// Dynamic shared memory of a launch with vg value groups per token.
constexpr int packed_smem_bytes(int bk, int bv, int vg) {
  return std::max<int>(kFastWarps * packed_stages(bk, bv) * packed_stage_bytes(bk, bv, vg), int(sizeof(SplitMerge)));
}

// The instantiation for key bits bk (the file of that width), value bits bv, ng folded value groups
// and ngk per-token key groups (0: per-channel keys); it is allowed the shared memory it can need.
PackedKernel packed_kernel_k2(int bv, int ng, int ngk);
PackedKernel packed_kernel_k4(int bv, int ng, int ngk);
PackedKernel packed_kernel_k8(int bv, int ng, int ngk);

namespace {

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
template <int BK, int BV, int NGK>
struct TileCopier {
  const char *k, *v, *meta0, *meta1, *kmeta;
  int n_meta;    // 16-byte chunks of value scales and mins this lane copies (0..2)
  bool kstat;    // per-token keys: this lane copies a 16-byte chunk of the tile's key statistics
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
      return reinterpret_cast<const char*>((n < mc ? p.vs : p.vm) + bh * p.vs_bh + int64_t(c / 4) * p.vs_row + wb + 8 * (c % 4));
    };
    meta0 = meta_src(lane);
    meta1 = meta_src(lane + 32);
    n_meta = (lane < 2 * mc) + (lane + 32 < 2 * mc);
    if constexpr (NGK > 0) {  // chunk `lane`: scales of group lane / 4, then the mins likewise
      const int c = lane < 4 * NGK ? lane : lane - 4 * NGK;
      kstat = lane < 8 * NGK;
      kmeta = reinterpret_cast<const char*>((lane < 4 * NGK ? p.ks : p.km) + bh * p.ks_bh + int64_t(c / 4) * p.ks_row + wb +
                                            8 * (c % 4));
    } else {
      kstat = false;
      kmeta = reinterpret_cast<const char*>((lane < 16 ? p.ks : p.km) + bh * p.ks_bh + int64_t(wb / p.gk) * kD) + 16 * (lane % 16);
    }
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
    if constexpr (NGK > 0) {
      kmeta += 64;
      cp_async16(dst + 128 * vg, kmeta - 64, on && kstat);
    } else {
      cp_async16(dst + 128 * vg, kmeta, on && group_start);
      if (group_start) kmeta += 2 * kD;
    }
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
// the codes are dequantized). The mma has 8 columns; with NG groups the block's <= 8/NG rows repeat
// once per group (column c = row + (8/NG)·group), every column's probabilities take that group's
// value scale, and a lane keeps the columns of its channels' group. NGK: per-token key groups (0:
// per-channel keys).
template <int BK, int BV, int NG, int NGK>
__global__ void __launch_bounds__(kFastWarps * 32, 4) packed_attention_kernel(const PackedParams p) {
  allow_dependent_launch();
  constexpr int KW = BK;        // words of one lane's 32-channel key chunk
  constexpr int VW = BV / 2;    // words of one lane's 16-channel value chunk
  constexpr int VCPB = 8 / BV;  // value codes per byte
  constexpr int S = packed_stages(BK, BV);
  constexpr bool FOLD = NG > 0;
  constexpr bool KPT = NGK > 0;
  // Query fragments of lane (g, t) in natural pairs: word p = half2(q[r][32t + 2p], q[r][32t + 2p + 1]);
  // qh_s: times the 2^-n of the key codes they meet
  __shared__ __align__(16) QueryFragments qf_s, qh_s;
  __shared__ float qsum_s[8][NGK > 0 ? NGK : 1];  // per-token keys: Σ q over each key group, per column
  extern __shared__ __align__(16) unsigned char stages[];  // the warps' rings; then the block merge

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int nh = FOLD ? 8 / NG : 8;  // columns per value group
  const int64_t bh = int64_t(blockIdx.z / p.qgroups) * p.Hkv + blockIdx.y;
  {
    const BlockRows br = block_rows(p.Hkv, p.rows, p.qgroups, nh);
    stage_query<NaturalPair>(qf_s, p.q, p.q_type, br.row0, br.nvalid, nh, &qh_s,
                             [](int pp) { return 1.f / float(1 << (BK * key_code<BK>(pp))); }, KPT);
    if constexpr (KPT) {
      for (int i = threadIdx.x; i < 8 * NGK; i += blockDim.x) {
        const int col = i / NGK, gi = i % NGK, hh = col % nh, cpg = kD / NGK;
        float x[8], sum = 0.f;
        if (hh < br.nvalid)
          for (int c = 0; c < cpg; c += 8) {
            load_q_run(p.q, p.q_type, (br.row0 + hh) * kD + gi * cpg + c, x);
#pragma unroll
            for (int j = 0; j < 8; ++j) sum += x[j];
          }
        qsum_s[col][gi] = sum;
      }
      __syncthreads();
    }
  }

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
  TileCopier<BK, BV, NGK> copier(p, bh, wb, vg, lane);
  // Per-channel keys: tile i of the warp starts a key group where the group's first token is the
  // tile's (key groups are 2^n tiles, host-checked), and tile 0 takes the stats of the group it is in.
  const int gmask = KPT ? 0 : p.gk / kFastTile - 1, tile0 = wb / kFastTile;
  auto starts_group = [=](int i) { return !KPT && (i == 0 || ((tile0 + i) & gmask) == 0); };
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
  uint32_t ka[8][2];          // B fragments of q·2^-n·s (per-token keys: q·2^-n), k-step S
  float crs[2] = {0.f, 0.f};  // per-channel keys: per-group score constant of each column, times scale_log2
  float qs[2][NGK > 0 ? NGK : 1];  // per-token keys: Σ q of each group of the lane's columns
  if constexpr (KPT) {
    uint32_t qn[16];
    load_query(qh_s, qn);
#pragma unroll
    for (int j = 0; j < 16; ++j) ka[j / 2][j % 2] = qn[j];
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int gi = 0; gi < NGK; ++gi) qs[h][gi] = qsum_s[2 * t + h][gi];
  }
  const float key_scale_log2 = p.scale_log2 * 0x1p24f;  // the key codes are code·2^(n-24)

  int read_off = 0, write_off = (S - 1) * sb;  // ring bytes of the tile read next / copied next
  // Two tiles per pass: ptxas then schedules one tile's loads and code extraction against the other's
  // (k2v2 67.6 -> 66.2 µs, H200).
#pragma unroll 2
  for (int i = 0; i < n_tiles; ++i) {
    cp_async_wait<S - 2>();  // tile i has landed (this lane's part; after the barrier everyone's)
    __syncwarp();            // ... and every lane is done with tile i - 1, whose stage is refilled now
    copier.copy(ring_lane + write_off, vg, !KPT && ((tile0 + i + S - 1) & gmask) == 0, i + S - 1 < n_tiles);  // never tile 0
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

    // ---- per-channel keys, a new key group: query fragments q·2^-n·s and the constant Σ q·min
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
    // ---- scores Sᵀ[tok, col], 16 tokens per mma (A = key codes, B = q·2^-n(·s))
    float d[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
    for (int bb = 0; bb < 2; ++bb) {
      load_tile_keys<BK>(kb, 2 * bb, g, t, kw[2 * bb]);
      load_tile_keys<BK>(kb, 2 * bb + 1, g, t, kw[2 * bb + 1]);
      if constexpr (KPT) {
        // one accumulator per key group (k-step S covers channels 16S..16S+15: group S·NGK/8), then
        // per token: Σ_g d_g·s_g·2^24 + min_g·Σq_g. The statistics: [scales: NGK x 32][mins: NGK x 32].
        const __half* kst = reinterpret_cast<const __half*>(ksb);
        float dg[NGK][4];
#pragma unroll
        for (int gi = 0; gi < NGK; ++gi)
#pragma unroll
          for (int e = 0; e < 4; ++e) dg[gi][e] = 0.f;
#define KVX_KSTEP(S)                                                                                            \
  mma16816(dg[(S) * NGK / 8], key_pair<BK, 2 * S>(kw[2 * bb]), key_pair<BK, 2 * S>(kw[2 * bb + 1]),              \
           key_pair<BK, 2 * S + 1>(kw[2 * bb]), key_pair<BK, 2 * S + 1>(kw[2 * bb + 1]), ka[S][0], ka[S][1]);
        KVX_KSTEP(0) KVX_KSTEP(1) KVX_KSTEP(2) KVX_KSTEP(3) KVX_KSTEP(4) KVX_KSTEP(5) KVX_KSTEP(6) KVX_KSTEP(7)
#undef KVX_KSTEP
#pragma unroll
        for (int gi = 0; gi < NGK; ++gi)
#pragma unroll
          for (int r = 0; r < 2; ++r) {  // tokens 16bb + g (elements 0, 1) and 16bb + g + 8 (2, 3)
            const int tok = 16 * bb + g + 8 * r;
            const float s24 = __half2float(kst[32 * gi + tok]) * 0x1p24f, mn = __half2float(kst[32 * (NGK + gi) + tok]);
#pragma unroll
            for (int h = 0; h < 2; ++h) d[bb][2 * r + h] = fmaf(dg[gi][2 * r + h], s24, fmaf(mn, qs[h][gi], d[bb][2 * r + h]));
          }
      } else {
#define KVX_KSTEP(S)                                                                                    \
  mma16816(d[bb], key_pair<BK, 2 * S>(kw[2 * bb]), key_pair<BK, 2 * S>(kw[2 * bb + 1]),                     \
           key_pair<BK, 2 * S + 1>(kw[2 * bb]), key_pair<BK, 2 * S + 1>(kw[2 * bb + 1]), ka[S][0], ka[S][1]);
        KVX_KSTEP(0) KVX_KSTEP(1) KVX_KSTEP(2) KVX_KSTEP(3) KVX_KSTEP(4) KVX_KSTEP(5) KVX_KSTEP(6) KVX_KSTEP(7)
#undef KVX_KSTEP
      }
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
    if constexpr (KPT) {
      const float no_offset[2] = {0.f, 0.f};  // d is the score: the key statistics vary per token
      online_softmax<FOLD>(d, p.scale_log2, no_offset, pb, m_run, cs, acc);
    } else {
      online_softmax<FOLD>(d, key_scale_log2, crs, pb, m_run, cs, acc);
    }
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
  // ---- the full-precision segments in the same launch (sinks; leftovers, residual and the chunk's
  // own tokens): the last warp of the last split (whose packed range the host shortened to make
  // room) takes their 32-token tiles, in fp16 on the tensor cores against q as is (bf16 rows convert
  // exactly).
  // the block's rows again (kept across the token loop they cost spills; recomputing is cheap)
  const BlockRows br = block_rows(p.Hkv, p.rows, p.qgroups, nh);
  if (blockIdx.x == gridDim.x - 1 && warp == kFastWarps - 1) {
    uint32_t qf[16];
    load_query(qf_s, qf);
    int qt[2];
    column_tokens(br, nh, p.chunk, qt);
#pragma unroll
    for (int sgi = 0; sgi < 2; ++sgi) {
      const DenseSeg sg = live(p.tail[sgi]);
      for (int r0 = 0; r0 < sg.R; r0 += kFastTile)
        attend_dense_tile<NaturalPair, FOLD>(sg, bh, r0, qf, qt, p.scale_log2, m_run, cs, acc);
    }
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
  store_split(*reinterpret_cast<SplitMerge*>(stages), m_run, cs, acc, br.nvalid, nh, br.row0, blockIdx.x, p.out);
}

// The instantiation for key/value bits K/V, NG folded value groups and NGK per-token key groups,
// allowed the shared memory it can need (at 8 value groups per token) on its first use.
template <int K, int V, int NG, int NGK>
PackedKernel packed_instance() {
  static const PackedKernel f = [] {
    const PackedKernel k = packed_attention_kernel<K, V, NG, NGK>;
    C10_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, packed_smem_bytes(K, V, kD / 16)));
    C10_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout, int(cudaSharedmemCarveoutMaxShared)));
    return k;
  }();
  return f;
}

// The instantiations of key bits K: per-channel keys with NG = 1, 2 or 0; per-token keys in groups
// equal to the value groups (NGK = value groups): (NGK, NG) = (1, 1), (2, 2), (2, 0), (4, 0).
template <int K, int V>
PackedKernel packed_instance(int ng, int ngk) {
  switch (ngk * 4 + ng) {
    case 0 * 4 + 1: return packed_instance<K, V, 1, 0>();
    case 0 * 4 + 2: return packed_instance<K, V, 2, 0>();
    case 0 * 4 + 0: return packed_instance<K, V, 0, 0>();
    case 1 * 4 + 1: return packed_instance<K, V, 1, 1>();
    case 2 * 4 + 2: return packed_instance<K, V, 2, 2>();
    case 2 * 4 + 0: return packed_instance<K, V, 0, 2>();
    case 4 * 4 + 0: return packed_instance<K, V, 0, 4>();
    default: return nullptr;
  }
}
template <int K>
PackedKernel packed_instance_of_bits(int bv, int ng, int ngk) {
  switch (bv) {
    case 2: return packed_instance<K, 2>(ng, ngk);
    case 4: return packed_instance<K, 4>(ng, ngk);
    case 8: return packed_instance<K, 8>(ng, ngk);
    default: return nullptr;
  }
}

}  // namespace
}  // namespace kvx::kernels::cuda
