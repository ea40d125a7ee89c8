// kvx eval: one perplexity job (experiments/perplexity.h) on one model and text file, printed.
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "apps/kvx/command.h"
#include "core/common/error.h"
#include "experiments/model_cache.h"
#include "experiments/protocol.h"
#include "experiments/timed_policy.h"
#include "quantizers/registry.h"

namespace {

struct EvalArgs {
  std::string model, dataset, method = "none", dtype = "float32", device = "cpu", format = "text";
  int64_t seq_len = 512, stride = 0, chunk = 32, warmup = 0, max_windows = 0, batch = 0;
  bool add_bos = false, profile = false;
};

std::string duration(double s) {
  if (s < 60) return fmt::format("{:.0f}s", s);
  return fmt::format("{:.0f}m{:02.0f}s", std::floor(s / 60), std::fmod(s, 60));
}

// Progress on stderr: rewritten in place on a terminal, every 10% otherwise.
std::function<void(double)> progress_printer() {
  auto start = std::make_shared<std::chrono::steady_clock::time_point>(std::chrono::steady_clock::now());
  auto last_decile = std::make_shared<int>(-1);
  const bool tty = ::isatty(fileno(stderr));
  return [=](double f) {
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - *start).count();
    if (el < 2.0 && f < 1.0) return;  // short runs print nothing
    const std::string eta = f > 0 ? duration(el * (1 - f) / f) : "?";
    if (tty) {
      fmt::print(stderr, "\r[eval] {:5.1f}%  elapsed {}  ETA {}   ", 100 * f, duration(el), eta);
      if (f >= 1.0) fmt::print(stderr, "\n");
    } else if (int(f * 10) > *last_decile) {
      *last_decile = int(f * 10);
      fmt::print(stderr, "[eval] {:5.1f}%  elapsed {}  ETA {}\n", 100 * f, duration(el), eta);
    }
    std::fflush(stderr);
  };
}

void run(const EvalArgs& a) {
  nlohmann::json protocol = {{"name", "perplexity"}, {"seq_len", a.seq_len}, {"stride", a.stride},
                             {"chunk", a.chunk},     {"warmup", a.warmup},   {"max_windows", a.max_windows},
                             {"add_bos", a.add_bos}, {"dtype", a.dtype},
                             {"profile", a.profile}, {"batch", a.batch}};
  nlohmann::json job;
  try {
    job["protocol"] = kvx::resolve_protocol(protocol);
  } catch (const kvx::ParamError& e) {
    throw kvx::error("perplexity option: {}", e.what());
  }
  try {
    job["method"] = kvx::resolve_method(kvx::parse_method_shorthand(a.method));
  } catch (const kvx::ParamError& e) {
    throw kvx::error("--method '{}': {}", a.method, e.what());
  }
  job["model"] = {{"path", a.model}, {"dtype", a.dtype}};
  job["dataset"] = {{"path", a.dataset}};
  auto models = kvx::make_model_cache();
  kvx::JobContext ctx;
  ctx.models = models.get();
  ctx.device = a.device;
  ctx.progress = progress_printer();
  const nlohmann::json m = kvx::run_job(job, ctx);
  if (a.format == "json") {
    fmt::print("{}\n", nlohmann::json({{"job", job}, {"metrics", m}}).dump(2));
    return;
  }
  fmt::print("model     {}\ndataset   {}\nmethod    {}\n", a.model, a.dataset, kvx::method_label(job["method"]));
  fmt::print("ppl       {:.4f}  (nll {:.5f}; {} tokens scored in {} windows of {})\n", m["ppl"].get<double>(),
             m["nll"].get<double>(), m["tokens_scored"].get<int64_t>(), m["windows"].get<int64_t>(), a.seq_len);
  fmt::print("speed     {:.0f} tokens/s  ({:.1f} s; attention {}, kernel {}, {} on {})\n",
             m["tokens_per_s"].get<double>(), m["eval_seconds"].get<double>(), m["attention_impl"].get<std::string>(),
             m["kernel_path"].get<std::string>(), a.dtype, a.device);
  fmt::print("kv cache  {:.1f} KiB per window (max {:.1f} KiB); {:.2f} bits/value, compression {:.2f}x, "
             "retained {:.1f}%\n",
             m["kv_bytes"].get<double>() / 1024, m["kv_bytes_max"].get<double>() / 1024, m["bpv"].get<double>(),
             m["compression_ratio"].get<double>(), 100 * m["retained_fraction"].get<double>());
  fmt::print("{}", kvx::format_profile(m));
}

void setup(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  auto* cmd = app.add_subcommand("eval", "Perplexity of one model on one text file with one KV-cache method");
  cmd->add_option("--model", a->model, "model folder (config.json, safetensors, tokenizer.json)")->required();
  cmd->add_option("--dataset", a->dataset, "text file (whole file is one document)")->required();
  cmd->add_option("--method", a->method, "method shorthand, e.g. none, kvq:k4v2")->capture_default_str();
  cmd->add_option("--seq-len", a->seq_len, "window length in tokens")->capture_default_str();
  cmd->add_option("--stride", a->stride, "tokens between windows (0 = non-overlapping)")->capture_default_str();
  cmd->add_option("--chunk", a->chunk, "tokens per forward call (1 = token-by-token)")->capture_default_str();
  cmd->add_option("--warmup", a->warmup, "window positions not scored")->capture_default_str();
  cmd->add_option("--max-windows", a->max_windows, "first N windows only (0 = all)")->capture_default_str();
  cmd->add_option("--batch", a->batch, "windows per forward (0 = auto: 1 on the CPU, sized from free memory on CUDA)")
      ->capture_default_str();
  cmd->add_flag("--add-bos", a->add_bos, "start every window with BOS");
  cmd->add_flag("--profile", a->profile,
                "per-phase timings: the cache policy (storage and attention), projections+MLP, the rest");
  cmd->add_option("--dtype", a->dtype, "compute dtype")
      ->check(CLI::IsMember({"float32", "bfloat16", "float16"}))
      ->capture_default_str();
  cmd->add_option("--device", a->device, "cpu, cuda, cuda:N, or a layer split cuda:0,cuda:1 (optional @20GiB limits)")->capture_default_str();
  cmd->add_option("--format", a->format, "text or json")->check(CLI::IsMember({"text", "json"}))->capture_default_str();
  cmd->callback([a] { run(*a); });
}

KVX_COMMAND(30, setup);

}  // namespace
