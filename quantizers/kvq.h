// KVQ codec (docs/methods/kvq.md): affine min-max group quantization of keys or
// values with their own bit width, grouping axis and group size. The codec only says how one
// of K or V is encoded; the token layout (fp residual of `residual_length` tokens, the flush
// rule, optional sinks) belongs to the `segments` policy (quantizers/segments.h), which
// resolve_method fills in with its defaults whenever a spec uses kvq without a policy.
//
// Parameters (component {"type": "kvq", ...} in the key or value slot):
//   bits          1 | 2 | 3 | 4 | 8. Default depends on the slot, as in the seed (nbits_k = 4,
//                 nbits_v = 2): 4 for "key", 2 for "value" (filled in by the prepare hook).
//   axis          token | channel (seed's axis 0 / -1, accepted as integer aliases); default token.
//   group         q_group_size, >= 1, default 64 (token grouping clamps it to head_dim).
//   compute_dtype auto | float16 | bfloat16: dtype of the 16-bit scales and shifts; auto = float16,
//                 the layout the fused kernels read (bfloat16 statistics run dequantize-then-attend).
//                 Dequantized values are always returned in the model's compute dtype.
#pragma once
#include <string>

#include "quantizers/registry.h"

namespace kvx {

MethodTraits kvq_traits();

// "kvq:k4v2", "kvq:k2cv2:g32:r64:s4:append" -> unresolved spec (see registry.h).
nlohmann::json parse_kvq_shorthand(const std::string& text);

}  // namespace kvx
