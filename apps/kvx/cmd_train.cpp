// kvx train: distillation fine-tuning through a compressing KV cache (experiments/distill_train.h).
#include <fmt/format.h>

#include "apps/kvx/command.h"
#include "experiments/distill_train.h"

namespace {

void setup(CLI::App& app) {
  auto a = std::make_shared<kvx::TrainOptions>();
  a->data = "data/wikitext-2/valid.txt";
  auto* cmd = app.add_subcommand(
      "train", "Distillation fine-tuning: student through a compressing cache matches the full-cache teacher");
  cmd->add_option("--model", a->model, "model folder to start from (config.json, safetensors, tokenizer.json)")
      ->required();
  cmd->add_option("--out", a->out, "output folder (Hugging Face checkpoint; checkpoint/ for --resume)")->required();
  cmd->add_option("--data", a->data, "training text file")->capture_default_str();
  cmd->add_option("--method", a->method,
                  "student cache: method shorthand (sink_window:s4:w64, kvq:k2v2, ...) or a JSON method spec; "
                  "default: attention_prune at a 25% budget if registered, else sink_window:s4:w64");
  cmd->add_option("--temperature", a->temperature, "distillation temperature T")->capture_default_str();
  cmd->add_option("--distillation-weight", a->distillation_weight, "weight λ of the T²·KL term")
      ->capture_default_str();
  cmd->add_option("--lr", a->lr, "peak learning rate (AdamW)")->capture_default_str();
  cmd->add_option("--weight-decay", a->weight_decay, "AdamW weight decay")->capture_default_str();
  cmd->add_option("--warmup-steps", a->warmup_steps, "linear warm-up steps, then linear decay (-1 = 10% of steps)")
      ->capture_default_str();
  cmd->add_option("--max-grad-norm", a->max_grad_norm, "gradient clipping (0 = off)")->capture_default_str();
  cmd->add_option("--epochs", a->epochs, "passes over the data")->capture_default_str();
  cmd->add_option("--max-steps", a->max_steps, "schedule length in steps (0 = epochs x steps per epoch)")
      ->capture_default_str();
  cmd->add_option("--batch", a->batch, "sequences per step")->capture_default_str();
  cmd->add_option("--max-length", a->max_length, "tokens per sequence")->capture_default_str();
  cmd->add_option("--chunk", a->chunk, "student tokens per forward call (0 = whole sequence)")->capture_default_str();
  cmd->add_option("--seed", a->seed, "data order seed")->capture_default_str();
  cmd->add_option("--max-sequences", a->max_sequences, "use only the first N sequences of the data (0 = all)")
      ->capture_default_str();
  cmd->add_option("--eval-batches", a->eval_batches, "fixed batches whose loss is printed before and after")
      ->capture_default_str();
  cmd->add_option("--checkpoint-every", a->checkpoint_every, "steps between checkpoints (out/checkpoint)")
      ->capture_default_str();
  cmd->add_option("--stop-after", a->stop_after, "end this run after N steps (checkpointed; 0 = run to the end)")
      ->capture_default_str();
  cmd->add_option("--log-every", a->log_every, "steps between progress lines")->capture_default_str();
  cmd->add_flag("--resume", a->resume, "continue from out/checkpoint (same options required)");
  cmd->add_option("--device", a->device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--dtype", a->dtype, "training dtype")
      ->check(CLI::IsMember({"float32", "bfloat16", "float16"}))
      ->capture_default_str();
  cmd->add_option("--save-dtype", a->save_dtype, "dtype of the saved weights (original = as the source model)")
      ->check(CLI::IsMember({"original", "float32", "bfloat16", "float16"}))
      ->capture_default_str();
  cmd->callback([a] {
    const kvx::TrainResult r = kvx::distill_train(*a);
    fmt::print("steps     {} -> {} of {} ({})\n", r.start_step, r.end_step, r.total_steps,
               r.finished ? "finished" : "stopped; --resume continues");
    fmt::print("student   {}\n", r.method_label);
    if (!r.eval_before.empty() && !r.eval_after.empty())
      fmt::print("loss      {:.4f} -> {:.4f}  (mle {:.4f} -> {:.4f}, kl {:.5f} -> {:.5f}; fixed batches)\n",
                 r.eval_before["loss"].get<double>(), r.eval_after["loss"].get<double>(),
                 r.eval_before["mle"].get<double>(), r.eval_after["mle"].get<double>(),
                 r.eval_before["kl"].get<double>(), r.eval_after["kl"].get<double>());
    fmt::print("speed     {:.0f} tokens/s ({:.1f} s this run)\n", r.tokens_per_s, r.seconds);
    fmt::print("output    {}\n", a->out);
  });
}

KVX_COMMAND(75, setup);

}  // namespace
