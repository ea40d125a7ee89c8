// A causal language model loaded from a Hugging Face folder (config.json + safetensors), with a
// forward pass whose attention goes through a KVCachePolicy (core/cache/kv_cache_policy.h).
// Weights are converted to the compute dtype at load; logits come back in fp32.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/cache/kv_cache_policy.h"
#include "core/model/model_config.h"
#include "core/model/placement.h"

namespace kvx {

class Rope;

class CausalLM {
 public:
  virtual ~CausalLM();
  ModelInfo info() const;
  const ModelConfig& config() const { return cfg_; }
  const std::string& path() const { return path_; }
  const Rope* rope() const { return rope_.get(); }
  at::ScalarType dtype() const { return dtype_; }
  at::Device device() const { return device_; }  // the first device (embedding, input ids)
  // Layer split over several devices (core/model/placement.h); empty on one device.
  const std::vector<at::Device>& layer_devices() const { return layer_devices_; }

  // ids [B, T] int64 tokens at absolute positions pos0 .. pos0+T-1; every layer's attention goes
  // through `cache` (attend per layer, end_step after the last; the attention paths taken are the
  // policy's paths()). Returns [B, T, V] fp32.
  virtual at::Tensor forward(const at::Tensor& ids, int64_t pos0, KVCachePolicy& cache) = 0;

  // A one-token plain step of a graph-replayed run (KVCachePolicy::plain_steps, decode_steps.h):
  // forward() at position pos0 + d, d the run's step counter `step` (int64 [1] on the model's
  // device) read by the kernels at run time, so that one captured call replays at every step of the
  // run (steps up to max_step_position()). Models without it never get the call (the default: -1).
  virtual int64_t max_step_position() const { return -1; }
  // Token ids [B, T] checked against the vocabulary (on the host) and moved to the model's device:
  // a sequence uploaded once and fed in slices.
  at::Tensor device_ids(const at::Tensor& ids) const;
  virtual at::Tensor forward_step(const at::Tensor& ids, int64_t pos0, const at::Tensor& step, KVCachePolicy& cache);

  // Training (kvx train). enable_training() replaces every weight by a leaf tensor with
  // requires_grad (tied heads stay tied) and makes forward() record autograd instead of running
  // under InferenceMode; a model on which it is never called runs exactly as before.
  virtual void enable_training() = 0;
  bool training() const { return training_; }
  // The trainable leaves, each once (a tied head shares the embedding), in a fixed order.
  virtual std::vector<at::Tensor> parameters() const = 0;
  // Weights under their Hugging Face names and in the checkpoint layout (fused projections
  // split, GPT-2 Conv1D back to [in, out]), detached, compute dtype; lm_head.weight only when
  // untied. What core/model/safetensors_writer.h writes.
  virtual std::vector<std::pair<std::string, at::Tensor>> hf_state_dict() const = 0;

 protected:
  CausalLM(ModelConfig cfg, std::string path, at::ScalarType dtype, at::Device device,
           const LayerSplit& split = {});
  // Split helpers for the builders: layer l's device, the head's device, layer l's Rope.
  bool split() const { return !layer_devices_.empty(); }
  at::Device layer_device(int64_t l) const { return split() ? layer_devices_[size_t(l)] : device_; }
  at::Device head_device() const { return split() ? head_device_ : device_; }
  const Rope* layer_rope(int64_t l) const;
  void make_split_ropes(int64_t head_dim, const RopeConfig& cfg, int64_t table_positions);
  ModelConfig cfg_;
  std::string path_;
  at::ScalarType dtype_;
  at::Device device_;
  std::unique_ptr<Rope> rope_;
  std::vector<at::Device> layer_devices_;          // split only
  at::Device head_device_ = at::kCPU;              // split only
  std::vector<std::shared_ptr<Rope>> layer_ropes_; // split only: a Rope on each layer's device
  bool training_ = false;
};

// "float32" | "bfloat16" | "float16" (kvx::Error otherwise).
at::ScalarType parse_compute_dtype(const std::string& dtype);
// "cpu" | "cuda" | "cuda:N" (kvx::Error otherwise, or when CUDA is not available).
at::Device parse_device(const std::string& device);

// Load config.json and the safetensors weights from `dir`. `device` may name a split over
// several devices, "cuda:0,cuda:1" or "cuda:0@20GiB,cuda:1@40GiB" (core/model/placement.h). float16 on CPU is refused (no CPU
// half matmul in Torch 1.13); bfloat16 on CPU works but is slow.
std::shared_ptr<CausalLM> load_model(const std::string& dir, const std::string& device = "cpu",
                                     const std::string& dtype = "float32");
// A Llama-family model of config `cfg` with random weights (every layer its own; N(0, 0.02²),
// norms 1, biases 0), seeded: benchmarks only (docs: random weights are allowed there alone).
std::shared_ptr<CausalLM> random_llama(const ModelConfig& cfg, const std::string& device = "cpu",
                                       const std::string& dtype = "float32", uint64_t seed = 0);
// The same with an explicit placement (even a single device listed twice, [cpu, cpu], takes
// the split path: tests of the placement code on CPU).
std::shared_ptr<CausalLM> load_model_split(const std::string& dir, const Placement& placement,
                                           const std::string& dtype = "float32");

}  // namespace kvx
