// `segments` policy: the token layout shared by codec-based methods (core/cache/segment_policy.h)
//     [ sink: first `sink` positions, fp | body: key/value codec blocks | residual: fp ]
// Why a policy component and not kvq parameters: residual length, flush rule and sinks describe
// the layout of the whole cache and are shared by the key and value codecs (which are paired
// independently: key kvq + value none is valid, values then stay fp in the body). When a spec
// uses a codec that needs a layout (kvq) and names no policy, resolve_method fills in
// {"type": "segments"} with the defaults below, so the layout enters the job key.
//
// Parameters:
//   sink             >= 0, default 0: first positions kept fp forever (0 = KVQ as in the seed)
//   residual_length  >= 0, default 128: KVQ flush threshold (docs/methods/kvq.md), or the fp window
//                    size when flush = sliding
//   flush            requantize_all (default, seed: re-quantize [Deq(Q), R, new] as one block)
//                    | append (KIVI-style: quantize [R, new] as a new block; same as
//                      requantize_all for per-token groups)
//                    | sliding (keep the last residual_length positions fp; older tokens are
//                      quantized once when they leave, docs/methods/selective_int8.md)
#pragma once
#include "quantizers/registry.h"

namespace kvx {

MethodTraits segments_traits();
// What the segments layout runs fused (the traits rows of segments and kvq).
extern const char* const kSegmentsKernels;

}  // namespace kvx
