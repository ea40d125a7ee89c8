// kernel_bench: `kvx bench decode` over the packed-KV kernels alone, linked without the model,
// runner and store code so that a GPU machine builds it in seconds. Same numbers and JSON as
//   kvx bench decode [--model-shape S] [--context N] [--batch N] [--method M]... [--residual N]
//                    [--iters N] [--no-end-to-end] [--device cuda|cpu] [--format text|json]
#include <fmt/format.h>

#include <cstdlib>
#include <string>

#include "experiments/decode_bench.h"

int main(int argc, char** argv) {
  kvx::DecodeBenchOptions opt;
  std::string format = "text";
  bool methods_given = false;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) throw std::runtime_error("missing value after " + a);
        return argv[++i];
      };
      if (a == "--model-shape") opt.shape = next();
      else if (a == "--context") opt.context = std::stoll(next());
      else if (a == "--batch") opt.batch = std::stoll(next());
      else if (a == "--method") {
        if (!methods_given) opt.methods.clear();
        methods_given = true;
        opt.methods.push_back(next());
      } else if (a == "--residual") opt.residual = std::stoll(next());
      else if (a == "--iters") opt.iters = std::stoi(next());
      else if (a == "--no-end-to-end") opt.end_to_end = false;
      else if (a == "--device") opt.device = next();
      else if (a == "--format") format = next();
      else throw std::runtime_error("unknown option " + a);
    }
    auto r = kvx::run_decode_bench(opt);
    if (format == "json") fmt::print("{}\n", r.dump(2));
    else fmt::print("{}", kvx::format_decode_bench(r));
  } catch (const std::exception& e) {
    fmt::print(stderr, "kernel_bench: {}\n", e.what());
    return 1;
  }
  return 0;
}
