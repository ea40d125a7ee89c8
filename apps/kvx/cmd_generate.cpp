// kvx generate: continue a prompt through a KV-cache method (experiments/generate.h).
#include <fmt/format.h>

#include "apps/kvx/command.h"
#include "core/common/error.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "experiments/generate.h"
#include "experiments/timed_policy.h"
#include "quantizers/registry.h"

namespace {

struct GenArgs {
  std::string model, prompt, method = "none", device = "cpu", dtype = "float32";
  kvx::GenerateOptions opt;
  bool no_stop = false, profile = false;
};

void run(const GenArgs& a) {
  nlohmann::json method;
  try {
    method = kvx::resolve_method(kvx::parse_method_shorthand(a.method));
  } catch (const kvx::ParamError& e) {
    throw kvx::error("--method '{}': {}", a.method, e.what());
  }
  auto model = kvx::load_model(a.model, a.device, a.dtype);
  auto tok = kvx::Tokenizer::load(a.model + "/tokenizer.json");
  std::vector<int32_t> ids = tok.encode(a.prompt, true);
  kvx::GenerateOptions opt = a.opt;
  opt.stop_id = a.no_stop ? -1 : tok.eos_id();
  auto inner = kvx::make_policy(method);
  // Profiling synchronizes the device around every cache call, so only --profile wraps it.
  std::unique_ptr<kvx::TimedPolicy> timed = a.profile ? std::make_unique<kvx::TimedPolicy>(*inner) : nullptr;
  kvx::GenerateTimes times;
  std::vector<int32_t> out =
      kvx::generate_continuation(*model, timed ? *timed : *inner, ids, opt, &times);
  fmt::print("{}{}\n", a.prompt, tok.decode(out, true));
  if (!a.profile) return;
  nlohmann::json m;
  kvx::write_profile(m, timed->times(), times.prefill_s, times.decode_s);
  fmt::print(stderr, "prompt    {} tokens, {:.0f} tokens/s\ndecode    {} steps, {:.1f} tokens/s\n{}", ids.size(),
             times.prefill_s > 0 ? double(ids.size()) / times.prefill_s : 0.0, times.decode_steps,
             times.decode_s > 0 ? double(times.decode_steps) / times.decode_s : 0.0, kvx::format_profile(m));
}

void setup(CLI::App& app) {
  auto a = std::make_shared<GenArgs>();
  auto* cmd = app.add_subcommand("generate", "Continue a prompt with a model and a KV-cache method");
  cmd->add_option("--model", a->model, "model folder (config.json, safetensors, tokenizer.json)")->required();
  cmd->add_option("--prompt", a->prompt, "prompt text")->required();
  cmd->add_option("--max-new-tokens", a->opt.max_new_tokens, "tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", a->opt.temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", a->opt.top_k, "sample from the k most likely tokens (0 = all)")->capture_default_str();
  cmd->add_option("--seed", a->opt.seed, "random seed for sampling")->capture_default_str();
  cmd->add_flag("--no-stop", a->no_stop, "do not stop at the end-of-text token");
  cmd->add_flag("--profile", a->profile,
                "print tokens/s and per-phase timings (cache policy with attention, projections+MLP, rest) on stderr");
  cmd->add_option("--method", a->method, "method shorthand, e.g. none, kvq:k4v2")->capture_default_str();
  cmd->add_option("--device", a->device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--dtype", a->dtype, "compute dtype")
      ->check(CLI::IsMember({"float32", "bfloat16", "float16"}))
      ->capture_default_str();
  cmd->callback([a] { run(*a); });
}

KVX_COMMAND(35, setup);

}  // namespace
