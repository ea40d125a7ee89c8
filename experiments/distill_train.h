// `kvx train`: distillation fine-tuning so that a model's predictions through a compressing KV
// cache match its own full-cache predictions (docs/methods/protocols.md, "Distillation training").
//
//   L = L_MLE + λ·T²·KL( softmax(z_teacher/T) ‖ softmax(z_student/T) )
//
// Teacher = the same parameters with the full-precision cache, no gradient (one forward of the
// whole sequence). Student = the same parameters fed chunk-wise through the compressing policy
// (any method the registry resolves), so the cache really is compressed while the loss is
// formed; gradients flow through the K/V the policy keeps and returns (not through selection,
// quantization codes or attention-based scoring). L_MLE is the student's next-token cross
// entropy; both terms are means over the B·(T−1) predicted positions.
//
// Data: the text file tokenized once (no BOS, as the perplexity protocol does), cut into
// non-overlapping sequences of max_length tokens, shuffled per epoch (seed), batch sequences per
// step. Optimizer AdamW, learning rate warm-up then linear decay to 0, gradient clipping.
// Output: out/model.safetensors + config/tokenizer files (a Hugging Face folder that load_model
// and transformers read), out/training.json (options, losses), and for resuming
// out/checkpoint/ (weights in the training dtype, optimizer.pt, state.json with the step).
#pragma once
#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace kvx {

struct DistillLoss {
  at::Tensor total, mle, kl;  // scalars; kl is the per-token mean KL before λ·T²
};

// student_logits / teacher_logits [..., V] (same shape), targets [...] int64 class ids.
DistillLoss distillation_loss(const at::Tensor& student_logits, const at::Tensor& teacher_logits,
                              const at::Tensor& targets, double temperature, double weight);

struct TrainOptions {
  std::string model;         // Hugging Face folder to start from
  std::string data;          // text file
  std::string out;           // output folder
  std::string method;        // method shorthand for the student cache; "" = default_train_method()
  std::string device = "cpu";
  std::string dtype = "float32";          // training (compute) dtype
  std::string save_dtype = "original";    // dtype of out/model.safetensors
  double temperature = 2.0;
  double distillation_weight = 0.5;
  double lr = 5e-5;
  double weight_decay = 0.01;
  double max_grad_norm = 1.0;  // 0 = no clipping
  int64_t epochs = 1;
  int64_t batch = 4;
  int64_t max_length = 256;
  int64_t chunk = 32;           // student tokens per forward call
  int64_t warmup_steps = -1;    // -1 = 10% of the schedule
  int64_t seed = 42;
  int64_t max_steps = 0;        // schedule length; 0 = epochs × steps per epoch
  int64_t stop_after = 0;       // end this run after N optimizer steps (checkpoint saved); 0 = run to the end
  int64_t checkpoint_every = 100;
  int64_t max_sequences = 0;    // use only the first N sequences of the data; 0 = all
  int64_t eval_batches = 2;     // fixed batches (the first, unshuffled) scored before and after
  int64_t log_every = 1;
  bool resume = false;
};

struct TrainStepLog {
  int64_t step = 0;  // 1-based optimizer step
  double loss = 0, mle = 0, kl = 0, lr = 0;
};

struct TrainResult {
  int64_t start_step = 0;   // step the run began at (> 0 after --resume)
  int64_t end_step = 0;     // step reached
  int64_t total_steps = 0;  // schedule length
  bool finished = false;    // end_step == total_steps (final model written)
  std::vector<TrainStepLog> log;
  nlohmann::json eval_before, eval_after;  // {loss, mle, kl} on the fixed eval batches
  double seconds = 0, tokens_per_s = 0;
  std::string method_label;
};

// "attention_prune" style adaptive policy when the registry has one, else a sink + window
// eviction sized for short fixtures.
std::string default_train_method();

// Progress lines go to `log` (stderr in the CLI; nullptr = silent).
TrainResult distill_train(const TrainOptions& opt, std::FILE* log = stderr);

}  // namespace kvx
