// The segment store policy: per layer, keys and values are held as
//     [ sink: positions < S, full precision | body: coded blocks | residual: full precision ]
// and every update returns [sink, decode(body), residual, chunk] in the compute dtype with the
// chunk itself untouched (ALGORITHMS.md 1.2). The body is real storage (packed codes plus
// metadata, see token_codec.h) and is what memory() reports. What attention reads is a decoded
// working copy of the whole layout, kept between calls so that each block is decoded once, when
// it enters the body, rather than on every chunk (a fused kernel would read the codes directly;
// the copy is the price of plain attention and is not the method's storage). With gradients
// enabled (training) each call decodes afresh and concatenates, as before, since the copy is
// written in place.
//
// How tokens move from the residual into the body (FlushMode):
//   RequantizeAll / Append — the KVQ rule of ALGORITHMS.md 4.4, applied to tokens at positions
//     >= S: the first call quantizes its whole chunk; later calls append to the residual, except
//     when the residual is open and len(R) + 1 >= residual_length: then RequantizeAll encodes
//     [decode(body), R, chunk] as one fresh block, Append encodes [R, chunk] as a new block
//     (KIVI-style; identical for per-token groups), and the residual empties and closes.
//   Sliding — ALGORITHMS.md 6.3: after each chunk the residual holds the last residual_length
//     positions (>= S); tokens leaving it are encoded once as a new block and never return.
// Positions are contiguous from 0 (nothing is evicted), so key_pos = 0 .. N-1.
#pragma once
#include <memory>
#include <string>

#include "core/cache/kv_cache_policy.h"
#include "core/cache/token_codec.h"

namespace kvx {

enum class FlushMode { RequantizeAll, Append, Sliding };

struct SegmentsConfig {
  int64_t sink = 0;               // S: first positions kept in full precision
  int64_t residual_length = 128;  // KVQ flush threshold, or the sliding window W
  FlushMode flush = FlushMode::RequantizeAll;
  std::shared_ptr<const TokenCodec> key_codec;    // null = full precision (fp codec)
  std::shared_ptr<const TokenCodec> value_codec;  // null = full precision (fp codec)
  std::string name = "segments";  // returned by KVCachePolicy::name()
};

std::unique_ptr<KVCachePolicy> make_segments_policy(SegmentsConfig cfg);

}  // namespace kvx
