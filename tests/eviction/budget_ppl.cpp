// eviction_budget_ppl: a small perplexity driver for comparing cache policies at equal budgets
// without the sweep machinery (same schedule as the perplexity protocol: non-overlapping
// windows of seq_len tokens from the start of the text, fed in chunks through the policy, every
// position after the first scored). Also prints the mean and peak entries held per layer
// (measured after every chunk) and the mean bpv.
//   eviction_budget_ppl MODEL_DIR TEXT SEQ_LEN CHUNK WINDOWS METHOD [METHOD...]
// METHOD: a kvx --method shorthand or a JSON method spec.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "quantizers/registry.h"

int main(int argc, char** argv) {
  if (argc < 7) {
    std::fprintf(stderr, "usage: %s MODEL_DIR TEXT SEQ_LEN CHUNK WINDOWS METHOD...\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const int64_t seq = std::stoll(argv[3]), chunk = std::stoll(argv[4]), nwin = std::stoll(argv[5]);
  auto model = kvx::load_model(dir, "cpu");
  auto tok = kvx::Tokenizer::load(dir + "/tokenizer.json");
  std::ifstream f(argv[2]);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::vector<int32_t> ids = tok.encode(ss.str(), false);
  const kvx::ModelInfo info = model->info();
  at::NoGradGuard ng;
  std::printf("| method | ppl | mean entries held | peak entries held | retained (end) | bpv (end) | s |\n|---|---|---|---|---|---|---|\n");
  for (int a = 6; a < argc; ++a) {
    const auto method = kvx::resolve_method(kvx::parse_method_shorthand(argv[a]));
    double nll = 0, held_sum = 0, bpv_sum = 0, ret_sum = 0;
    int64_t scored = 0, held_n = 0, peak = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t w = 0; w < nwin; ++w) {
      const int64_t base = w * seq;
      if (base + seq > int64_t(ids.size())) break;
      auto policy = kvx::make_policy(method);
      policy->reset(info, 1);
      for (int64_t c0 = 0; c0 < seq; c0 += chunk) {
        const int64_t n = std::min(chunk, seq - c0);
        std::vector<int64_t> x(ids.begin() + base + c0, ids.begin() + base + c0 + n);
        at::Tensor t = at::tensor(x, at::kLong).view({1, n});
        at::Tensor logits = model->forward(t, c0, *policy)[0];
        const auto r = policy->memory();
        held_sum += double(r.tokens_kept);
        peak = std::max(peak, r.tokens_kept);
        ++held_n;
        const int64_t j1 = std::min<int64_t>(n, seq - 1 - c0);
        if (j1 <= 0) continue;
        at::Tensor lp = at::log_softmax(logits.narrow(0, 0, j1).to(at::kFloat), -1);
        std::vector<int64_t> y(ids.begin() + base + c0 + 1, ids.begin() + base + c0 + 1 + j1);
        nll -= lp.gather(1, at::tensor(y, at::kLong).unsqueeze(1)).to(at::kDouble).sum().item<double>();
        scored += j1;
      }
      const auto r = policy->memory();
      bpv_sum += r.bpv(info, 1);
      ret_sum += r.tokens_seen ? double(r.tokens_kept) / double(r.tokens_seen) : 1.0;
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("| %s | %.3f | %.1f | %lld | %.3f | %.2f | %.0f |\n", kvx::method_label(method).c_str(),
                std::exp(nll / double(scored)), held_sum / double(held_n), (long long)peak, ret_sum / double(nwin),
                bpv_sum / double(nwin), s);
    std::fflush(stdout);
  }
  return 0;
}
