// `sink_window` eviction policy (docs/methods/sink_window.md, StreamingLLM-style): per layer
// keep the first sink_size positions and the last window_size positions in full precision; everything
// else is evicted for good (its storage is released). Keys keep their original RoPE rotation
// and key_pos carries their true positions; AttnInputs.sink/window make the model's mask give
// every query of a chunk its own exact window (query p sees pos iff pos <= p and
// (pos < sink_size || p - pos < window_size)), so chunked evaluation equals streaming.
//   sink_size    >= 0, default 16
//   window_size  >= 1, default 32 (a query must at least see itself)
#pragma once
#include <string>

#include "quantizers/registry.h"

namespace kvx {

MethodTraits sink_window_traits();
nlohmann::json parse_sink_window_shorthand(const std::string& text);  // "sink_window[:s16][:w32]"
std::unique_ptr<KVCachePolicy> make_sink_window_policy(int64_t sink, int64_t window);

}  // namespace kvx
