// A causal language model loaded from a Hugging Face folder (config.json + safetensors), with a
// forward pass whose attention goes through a KVCachePolicy (core/cache/kv_cache_policy.h).
// Weights are converted to the compute dtype at load; logits come back in fp32.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

#include "core/cache/kv_cache_policy.h"
#include "core/model/model_config.h"

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
  at::Device device() const { return device_; }
  // Attention path the last forward() took: "matmul" (explicit softmax; attention
  // probabilities available) or "sdpa" (Torch 2.x fused kernel, CUDA only).
  const std::string& attention_impl() const { return attn_impl_; }

  // ids [B, T] int64 tokens at absolute positions pos0 .. pos0+T-1; every layer's keys and
  // values go through `cache` (update per layer, end_step after the last). Returns [B, T, V] fp32.
  virtual at::Tensor forward(const at::Tensor& ids, int64_t pos0, KVCachePolicy& cache) = 0;

 protected:
  CausalLM(ModelConfig cfg, std::string path, at::ScalarType dtype, at::Device device);
  ModelConfig cfg_;
  std::string path_;
  at::ScalarType dtype_;
  at::Device device_;
  std::unique_ptr<Rope> rope_;
  std::string attn_impl_ = "none";
};

// "float32" | "bfloat16" | "float16" (kvx::Error otherwise).
at::ScalarType parse_compute_dtype(const std::string& dtype);
// "cpu" | "cuda" | "cuda:N" (kvx::Error otherwise, or when CUDA is not available).
at::Device parse_device(const std::string& device);

// Load config.json and the safetensors weights from `dir`. float16 on CPU is refused (no CPU
// half matmul in Torch 1.13); bfloat16 on CPU works but is slow.
std::shared_ptr<CausalLM> load_model(const std::string& dir, const std::string& device = "cpu",
                                     const std::string& dtype = "float32");

}  // namespace kvx
