// `selective_int8` policy (docs/methods/selective_int8.md): per layer and (batch, KV head)
//     [ sink: positions < sink_size, fp | body: int8 absmax per token per head + fp32 scale |
//       window: last window_size positions, fp ]
// Tokens enter int8 exactly once, when they leave the window (README semantics, not the
// reference's slot-overwriting decode path). It is the segments layout with flush = sliding and
// the int8 codec on both sides, so the key and value slots must stay 'none'.
//   sink_size    >= 0, default 16
//   window_size  >= 0, default 32
#pragma once
#include <string>

#include "quantizers/registry.h"

namespace kvx {

MethodTraits selective_int8_traits();
// "selective_int8", "selective_int8:s16:w32"
nlohmann::json parse_selective_int8_shorthand(const std::string& text);

// Shared by selective_int8 and sink_window: "<name>[:s<sink>][:w<window>]".
nlohmann::json parse_sink_window_style_shorthand(const std::string& text, const std::string& name);
// Both policies store keys and values themselves: the codec slots must be 'none'.
void require_no_codecs(const nlohmann::json& resolved, const std::string& policy);

}  // namespace kvx
