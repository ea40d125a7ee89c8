// The segment store policy: per layer, keys and values are held as
//     [ sink: positions < S, full precision | body: compressed | residual: full precision ]
// and each chunk attends to [sink, body, residual] plus its own keys and values in full precision,
// then is stored (docs/methods/README.md). The body is real storage (packed codes plus metadata) and
// is what memory() reports.
//
// Storage, by the codecs (TokenCodec::format):
//   affine codes in the kernels' layout (bits 2/4/8, fp16 statistics, per-token groups dividing
//     head_dim or per-channel key groups; values per token): a PackedStore per side;
//   int8 absmax on both sides: an Int8Store per side;
//   anything else: the codec's CodedBlocks.
// Attention: a packed or int8 body on CUDA runs the fused kernel over the storage in place
// (core/kernels: decode steps and chunks of up to kMaxFusedRows query rows per KV head; the fused
// kernel's sinks and tail segments hold the sink, the residual and the chunk, plus the few body
// tokens of an unfinished tile or key group, decoded). On CPU the same storage attends through its
// CPU reference (dequantize, then fp32 attention). Other bodies, and chunks too long for the fused
// path, dequantize and attend densely (dequant_then_attend). `kernel: fused` makes every call fused
// or fails; `kernel: dequant_then_attend` never runs the fused kernel.
//
// How tokens move from the residual into the body (FlushMode):
//   RequantizeAll / Append — the KVQ rule (docs/methods/kvq.md), applied to tokens at positions
//     >= S: the first call quantizes its whole chunk; later calls append to the residual, except
//     when the residual is open and len(R) + 1 >= residual_length: then RequantizeAll encodes
//     [decode(body), R, chunk] as one fresh block, Append encodes [R, chunk] as a new block
//     (KIVI-style), and the residual empties and closes. Re-encoding decoded groups gives back their
//     codes (min and max are codes 0 and 2^b - 1 of the group, the fp16 scale rounds back), so on
//     packed storage RequantizeAll re-encodes only what changes: per-token groups append, and
//     per-channel groups re-encode the unfinished last group with the new tokens.
//   Sliding — docs/methods/selective_int8.md: after each chunk the residual holds the last
//     residual_length positions (>= S); tokens leaving it are encoded once and never return.
// Positions are contiguous from 0 (nothing is evicted), so key_pos = 0 .. N-1.
#pragma once
#include <memory>
#include <string>

#include "core/cache/kv_cache_policy.h"
#include "core/cache/token_codec.h"

namespace kvx {

enum class FlushMode { RequantizeAll, Append, Sliding };
// Query rows per KV head (GQA ratio x chunk tokens) up to which chunks run fused by default; longer
// chunks (prefill) dequantize once and run dense flash attention, which reads the history once.
constexpr int64_t kMaxFusedRows = 256;

struct SegmentsConfig {
  int64_t sink = 0;               // S: first positions kept in full precision
  int64_t residual_length = 128;  // KVQ flush threshold, or the sliding window W
  FlushMode flush = FlushMode::RequantizeAll;
  std::shared_ptr<const TokenCodec> key_codec;    // null = full precision (fp codec)
  std::shared_ptr<const TokenCodec> value_codec;  // null = full precision (fp codec)
  std::string name = "segments";  // returned by KVCachePolicy::name()
  KernelRequest kernel = KernelRequest::Auto;
};

std::unique_ptr<KVCachePolicy> make_segments_policy(SegmentsConfig cfg);

// Why a segments layout of these codecs cannot run the fused kernel for this model ("" when it can):
// storage, head_dim, dtype, device. Policies and `kvx list` use it.
std::string segments_fused_unsupported(const SegmentsConfig& cfg, const ModelInfo& m);

}  // namespace kvx
