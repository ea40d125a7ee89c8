// kvx bench decode | prefill | eval: attention kernel time, achieved bandwidth and decode /
// prefill / perplexity-evaluation tokens/s at real model shapes with random weights, each method
// as a ratio against fp16 in the same run. Parsing only; the work is in experiments/.
#include <fmt/format.h>

#include "apps/kvx/command.h"
#include "experiments/decode_bench.h"
#include "experiments/throughput_bench.h"

namespace {

void setup(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "Speed benchmarks at real model shapes (random weights)");
  bench->require_subcommand(1);
  auto* dec = bench->add_subcommand("decode", "Decode attention + end-to-end decode tokens/s vs fp16");
  auto opt = std::make_shared<kvx::DecodeBenchOptions>();
  auto format = std::make_shared<std::string>("text");
  dec->add_option("--model-shape", opt->shape, "llama3-8b | llama2-7b | mistral-7b | qwen2-7b | tiny | path/to/config.json")
      ->capture_default_str();
  dec->add_option("--context", opt->context, "cached tokens per sequence")->capture_default_str()->check(CLI::PositiveNumber);
  dec->add_option("--batch", opt->batch, "sequences decoded together")->capture_default_str()->check(CLI::PositiveNumber);
  dec->add_option("--method", opt->methods,
                  "kvx eval --method shorthand (repeatable: kvq:k4v4, kvq:k2cv2:r64, selective_int8:s16:w32, ...); "
                  "the fp16 baselines always run")
      ->capture_default_str();
  dec->add_option("--iters", opt->iters, "timed attention samples (median reported)")->capture_default_str()->check(CLI::PositiveNumber);
  dec->add_option("--steps", opt->steps, "decode steps timed end to end")->capture_default_str()->check(CLI::PositiveNumber);
  dec->add_flag("!--no-end-to-end", opt->end_to_end, "time only the attention");
  dec->add_option("--decode", opt->decode,
                  "how decode steps run: auto (CUDA graphs where the model and cache allow, as kvx run), cuda_graph, eager")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cuda_graph", "eager"}));
  dec->add_option("--dtype", opt->dtype, "compute dtype (default bfloat16 on CUDA, float32 on CPU)");
  dec->add_option("--device", opt->device, "cuda or cpu")->capture_default_str()->check(CLI::IsMember({"cuda", "cpu"}));
  dec->add_option("--format", *format, "text or json")->check(CLI::IsMember({"text", "json"}));
  dec->callback([opt, format] {
    auto r = kvx::run_decode_bench(*opt);
    if (*format == "json") fmt::print("{}\n", r.dump(2));
    else fmt::print("{}", kvx::format_decode_bench(r));
  });

  for (const char* mode : {"prefill", "eval"}) {
    auto* sub = bench->add_subcommand(mode, std::string(mode) == "prefill"
                                                ? "Prefill tokens/s (one forward over --context tokens) vs fp16"
                                                : "Perplexity-evaluation tokens/s (chunked forward, quantized cache) vs fp16");
    auto o = std::make_shared<kvx::ThroughputBenchOptions>();
    auto fmt_ = std::make_shared<std::string>("text");
    sub->add_option("--model-shape", o->shape, "llama3-8b | llama2-7b | mistral-7b | qwen2-7b | tiny | path/to/config.json")
        ->capture_default_str();
    sub->add_option("--context", o->context, "tokens per sequence")->capture_default_str()->check(CLI::PositiveNumber);
    sub->add_option("--batch", o->batch, "sequences")->capture_default_str()->check(CLI::PositiveNumber);
    sub->add_option("--method", o->methods, "kvx eval --method shorthand (repeatable); fp16 always runs")
        ->capture_default_str();
    if (std::string(mode) == "eval")
      sub->add_option("--chunk", o->chunk, "tokens per forward call (perplexity protocol)")
          ->capture_default_str()->check(CLI::PositiveNumber);
    sub->add_option("--iters", o->iters, "timed repetitions (median reported)")->capture_default_str()->check(CLI::PositiveNumber);
    sub->add_option("--device", o->device, "cuda or cpu")->capture_default_str()->check(CLI::IsMember({"cuda", "cpu"}));
    sub->add_option("--dtype", o->dtype, "compute dtype (default bfloat16 on CUDA, float32 on CPU)");
    sub->add_option("--format", *fmt_, "text or json")->check(CLI::IsMember({"text", "json"}));
    sub->callback([o, fmt_, mode] {
      auto r = kvx::run_throughput_bench(mode, *o);
      if (*fmt_ == "json") fmt::print("{}\n", r.dump(2));
      else fmt::print("{}", kvx::format_throughput_bench(r));
    });
  }
}

KVX_COMMAND(70, setup);

}  // namespace
