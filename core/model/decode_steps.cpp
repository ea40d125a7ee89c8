#include "core/model/decode_steps.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>

#ifdef KVX_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "core/cache/kv_cache_policy.h"
#include "core/common/error.h"
#include "core/model/model.h"

namespace kvx {

std::string step_mode_name(StepMode m) {
  switch (m) {
    case StepMode::Eager: return "eager";
    case StepMode::Graph: return "cuda_graph";
    case StepMode::Emulate: return "emulate";
  }
  return "?";
}

StepMode parse_step_mode(const std::string& s) {
  if (s == "eager") return StepMode::Eager;
  if (s == "cuda_graph") return StepMode::Graph;
  if (s == "emulate") return StepMode::Emulate;
  throw error("decode steps '{}': expected auto, cuda_graph, eager or emulate", s);
}

StepMode default_step_mode(const CausalLM& model) {
#ifdef KVX_WITH_CUDA
  if (model.device().is_cuda() && model.max_step_position() > 0) return StepMode::Graph;
#endif
  return StepMode::Eager;
}

#ifdef KVX_WITH_CUDA
struct DecodeSteps::Graph {
  at::cuda::CUDAGraph graph;
};
#else
struct DecodeSteps::Graph {};
#endif

DecodeSteps::DecodeSteps(CausalLM& model, KVCachePolicy& cache, StepMode mode) : model_(model), cache_(cache), mode_(mode) {
  if (mode_ == StepMode::Graph && !(model.device().is_cuda() && model.max_step_position() > 0))
    throw error("decode steps: cuda_graph needs a model on one CUDA device with the fused kernels (this one is on {})",
                model.device().str());
}

DecodeSteps::~DecodeSteps() = default;

at::Tensor DecodeSteps::eager(const at::Tensor& ids, int64_t pos) {
  left_ = 0;
  ++stats_.eager;
  return model_.forward(ids, pos, cache_);
}

at::Tensor DecodeSteps::forward(const at::Tensor& ids, int64_t pos) {
  if (mode_ == StepMode::Eager || ids.dim() != 2 || ids.size(1) != 1) return eager(ids, pos);
  c10::InferenceMode guard;  // the run's tensors are updated in place from step to step
  if (left_ > 0 && pos != next_pos_) left_ = 0;  // not the run's next step: a new run
  if (left_ == 0) {
    const int64_t want = std::min(kRunSteps, model_.max_step_position() - pos);
    left_ = want > 0 ? cache_.plain_steps(pos, want) : 0;
    if (left_ == 0) return eager(ids, pos);
    ids_ = ids.to(model_.device()).clone();
    counter_ = at::zeros({1}, at::TensorOptions().dtype(at::kLong).device(model_.device()));
    pos0_ = pos;
    ++stats_.captures;
    if (mode_ == StepMode::Graph) capture();
  } else {
    ids_.copy_(ids);
  }
  if (mode_ == StepMode::Graph) {
#ifdef KVX_WITH_CUDA
    graph_->graph.replay();
#endif
  } else {
    logits_ = model_.forward_step(ids_, pos0_, counter_, cache_);
    counter_.add_(1);
  }
  cache_.advance(1);
  --left_;
  next_pos_ = pos + 1;
  ++stats_.plain;
  return logits_;
}

// The run's step, recorded on a side stream (captures cannot use the default stream) and replayed
// on the caller's: the recording launches nothing, and attend() of a plain step changes no host
// state, so the first replay is the run's first step.
void DecodeSteps::capture() {
#ifdef KVX_WITH_CUDA
  graph_.reset();  // the previous run's graph and its memory
  graph_ = std::make_unique<Graph>();
  const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(false, model_.device().index());
  c10::cuda::CUDAStreamGuard on_side(side);
  graph_->graph.capture_begin();
  try {
    logits_ = model_.forward_step(ids_, pos0_, counter_, cache_);
    counter_.add_(1);
  } catch (...) {
    try {
      graph_->graph.capture_end();
    } catch (...) {
    }
    graph_.reset();
    left_ = 0;
    throw;
  }
  graph_->graph.capture_end();
#endif
}

}  // namespace kvx
