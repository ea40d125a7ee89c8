// The product's decode loop: one-token steps of a model through its cache policy (generation,
// token-by-token perplexity and KL divergence, kvx bench decode).
//
// On CUDA a run of plain steps (KVCachePolicy::plain_steps: steps that store their token and attend
// without any host decision) is captured once as a CUDA graph of the whole step — embedding, every
// layer's projections, RoPE, the cache's store and attention, the head — and replayed once per
// step. The kernels read the token's position and the cache's lengths from a step counter that the
// graph itself advances, so a replay costs one launch and no step waits for the host. A step the
// cache cannot take plainly (a flush, an eviction, a chunk of several tokens) runs eagerly, and the
// next run is captured anew (a flush may move what the graph read).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>

namespace kvx {

class CausalLM;
class KVCachePolicy;

enum class StepMode {
  Eager,    // every step through CausalLM::forward
  Graph,    // plain runs captured and replayed as CUDA graphs (CUDA builds, CUDA models)
  Emulate,  // plain runs through the same code without a capture: each step calls forward_step
            // (the CPU's check of what a captured step does)
};
// "eager" | "cuda_graph" | "emulate"
std::string step_mode_name(StepMode m);
StepMode parse_step_mode(const std::string& s);  // the names above, or "auto" (default_step_mode)
// Graph for a model on CUDA that has plain steps, Eager otherwise.
StepMode default_step_mode(const CausalLM& model);

class DecodeSteps {
 public:
  DecodeSteps(CausalLM& model, KVCachePolicy& cache, StepMode mode);
  ~DecodeSteps();
  DecodeSteps(const DecodeSteps&) = delete;
  DecodeSteps& operator=(const DecodeSteps&) = delete;

  // ids [B, n] at positions pos.. (the cache holds pos tokens). n == 1 takes a plain run where the
  // cache allows; anything else runs eagerly. Returns the logits [B, n, V] fp32: for a replayed step
  // a buffer that the next step overwrites (use it, or copy it, before the next call).
  at::Tensor forward(const at::Tensor& ids, int64_t pos);

  struct Stats {
    int64_t plain = 0;     // steps of plain runs (replayed, or emulated)
    int64_t eager = 0;     // forward calls run eagerly
    int64_t captures = 0;  // plain runs begun (graphs captured in Graph mode)
  };
  const Stats& stats() const { return stats_; }
  StepMode mode() const { return mode_; }

  // Steps one plain run takes at most: a new capture costs about two eager steps.
  static constexpr int64_t kRunSteps = 256;

 private:
  at::Tensor eager(const at::Tensor& ids, int64_t pos);
  void capture();
  struct Graph;
  CausalLM& model_;
  KVCachePolicy& cache_;
  StepMode mode_;
  int64_t left_ = 0, next_pos_ = -1, pos0_ = 0;  // the run: steps left, the next step's position, its first
  at::Tensor ids_, counter_, logits_;             // the run's input ids, step counter, and (Graph) output
  std::unique_ptr<Graph> graph_;
  Stats stats_;
};

}  // namespace kvx
