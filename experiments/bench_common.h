// Pieces shared by `kvx bench decode` (decode_bench) and `kvx bench prefill|eval`
// (throughput_bench): the random-weight layer at a model's real shape and device timing helpers.
// Random weights are allowed in benchmarks only (DESIGN.md).
#pragma once
#include <ATen/core/Tensor.h>

#include "experiments/decode_bench.h"

namespace kvx::bench {

// One decoder layer's weights (shared by every layer: the bytes streamed per layer are a real
// model's), laid out [in, out] for x·W: qkv fused, gate/up fused.
struct RandomWeights {
  at::Tensor qkv, o, gate_up, down, lm_head, norm;
};
RandomWeights random_weights(const ModelShape& s, const at::TensorOptions& opt);

// RMS norm with the layer's (all-ones) weight, computed in fp32 as the models do.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w);
// MLP block (SiLU-gated) of x [..., hidden], residual not added.
at::Tensor mlp(const at::Tensor& x, const RandomWeights& w, const ModelShape& s);

// Waits for the device's queued work (no-op on CPU).
void sync(const at::Device& d);

}  // namespace kvx::bench
