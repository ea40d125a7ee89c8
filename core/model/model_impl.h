// Internal to core/model: the per-architecture builders and shared helpers used by llama.cpp
// and gpt2.cpp. Not part of the public interface.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <vector>

#include "core/model/model.h"
#include "core/model/safetensors.h"

namespace kvx::detail {

// Where a builder's weights come from: a checkpoint (Checkpoint::load) or random_llama's generator.
using WeightLoader = std::function<at::Tensor(const std::string& name, const std::vector<int64_t>& shape,
                                              at::ScalarType dtype, at::Device device)>;

// split: each layer's device and the head's (empty: everything on `device`).
std::shared_ptr<CausalLM> make_llama(const ModelConfig& cfg, const std::string& dir, const WeightLoader& load,
                                     at::ScalarType dtype, at::Device device, const LayerSplit& split = {});
std::shared_ptr<CausalLM> make_gpt2(const ModelConfig& cfg, const std::string& dir, Checkpoint& ckpt,
                                    at::ScalarType dtype, at::Device device, const LayerSplit& split = {});

// kvx train: a leaf copy of a loaded weight with requires_grad (undefined stays undefined).
// Call outside InferenceMode.
at::Tensor trainable_copy(const at::Tensor& w);

// Validates ids ([B, T] integer; values in [0, vocab) when they are on the host) and moves them to
// the model device.
at::Tensor check_ids(const at::Tensor& ids, int64_t vocab, at::Device device);

// at::linear of x [B, T, in]. On the CPU the sequences of a batch go through the GEMM one at a time:
// BLAS kernels round differently with the number of rows, and a sequence must get the numbers in a
// batch that it gets alone (the protocols' `batch`). On CUDA one GEMM takes the batch.
at::Tensor batch_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {});

}  // namespace kvx::detail
