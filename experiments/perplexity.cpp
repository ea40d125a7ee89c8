#include "experiments/perplexity.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cmath>
#include <map>
#include <mutex>

#include "core/common/error.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "experiments/dataset_adapter.h"
#include "experiments/model_cache.h"
#include "experiments/text_windows.h"
#include "experiments/timed_policy.h"
#include "quantizers/aqua.h"
#include "quantizers/qaq.h"

namespace kvx {
namespace {

std::vector<ParamSpec> perplexity_params() {
  return {
      {"seq_len", ParamType::Int, 512, 2, 1e9, {}, "window length in tokens (BOS included when add_bos)"},
      {"stride", ParamType::Int, 0, 0, 1e9, {}, "tokens between window starts; 0 = non-overlapping"},
      {"chunk", ParamType::Int, 32, 1, 1e9, {}, "tokens per forward call; 1 = token-by-token decoding"},
      {"warmup", ParamType::Int, 0, 0, 1e9, {}, "window positions < warmup are fed but not scored"},
      {"max_windows", ParamType::Int, 0, 0, 1e12, {}, "evaluate only the first N windows; 0 = all"},
      kBatchParam,
      {"add_bos", ParamType::Bool, false, -1e300, 1e300, {}, "start every window with the BOS token"},
      {"profile", ParamType::Bool, false, -1e300, 1e300, {},
       "record per-phase timings (prof_*: cache policy with its attention, projections+MLP, rest; synchronizes CUDA)"},
      {"dtype", ParamType::Enum, "float32", -1e300, 1e300, {"float32", "bfloat16", "float16"},
       "compute dtype of the model (float16 needs CUDA)"},
  };
}

// Dataset tokens without BOS, memoized per (tokenizer folder, dataset path, content hash).
std::shared_ptr<const std::vector<int32_t>> text_tokens(const std::string& model_dir, const Tokenizer& tok,
                                                         const nlohmann::json& dataset) {
  if (!dataset.is_object() || !dataset.contains("path") || !dataset["path"].is_string())
    throw error("job: 'dataset' must be a mapping with a string 'path'");
  const std::string path = dataset["path"].get<std::string>();
  const std::string key = model_dir + "|" + path + "|" + dataset.value("hash", std::string());
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const std::vector<int32_t>>> memo;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = memo.find(key);
    if (it != memo.end()) return it->second;
  }
  auto ids = std::make_shared<const std::vector<int32_t>>(tok.encode(load_stream(path, DatasetOptions{}), false));
  std::lock_guard<std::mutex> lock(mu);
  memo[key] = ids;
  return ids;
}

nlohmann::json run_perplexity(const nlohmann::json& job, JobContext& ctx) {
  const auto& p = job.at("protocol");
  const auto& spec = job.at("model");
  if (!spec.is_object() || !spec.contains("path") || !spec["path"].is_string())
    throw error("job: 'model' must be a mapping with a string 'path'");
  const std::string dir = spec["path"].get<std::string>();
  std::unique_ptr<ModelCache> own;
  ModelCache* models = ctx.models;
  if (!models) models = (own = make_model_cache()).get();
  auto model = models->get(spec, ctx.device, pstr(p, "dtype"));
  auto tok = load_tokenizer_cached(dir);
  auto ids = text_tokens(dir, *tok, job.at("dataset"));

  PerplexityOptions o;
  o.seq_len = pint(p, "seq_len");
  o.stride = pint(p, "stride");
  o.chunk = pint(p, "chunk");
  o.warmup = pint(p, "warmup");
  o.max_windows = pint(p, "max_windows");
  o.add_bos = pbool(p, "add_bos");
  o.profile = pbool(p, "profile");
  o.bos_id = tok->bos_id();
  o.batch = protocol_batch(p, *model, o.seq_len, o.chunk);
  const nlohmann::json method = job.contains("method") ? job["method"] : resolve_method(parse_method_shorthand("none"));
  auto m = perplexity_over_tokens(*model, *ids, o, method, &ctx);
  m["dataset_tokens"] = int64_t(ids->size());
  return m;
}

std::string scalar_name(at::ScalarType t) { return std::string(c10::toString(t)); }

}  // namespace

nlohmann::json perplexity_over_tokens(CausalLM& model, const std::vector<int32_t>& ids, const PerplexityOptions& o,
                                      const nlohmann::json& method, JobContext* ctx) {
  c10::InferenceMode guard;
  const int64_t bos = o.add_bos ? 1 : 0;
  if (o.add_bos && o.bos_id < 0) throw error("perplexity: add_bos is set but the tokenizer has no BOS token");
  if (o.seq_len < 2 + bos) throw error("perplexity: seq_len must be at least {}, got {}", 2 + bos, o.seq_len);
  const int64_t text_len = o.seq_len - bos;  // text tokens per window
  const int64_t stride = o.stride > 0 ? o.stride : text_len;
  const int64_t chunk = std::max<int64_t>(1, o.chunk);
  const auto windows = cut_windows(int64_t(ids.size()), text_len, stride, o.max_windows);
  // Overlapping windows score only the tokens the previous window did not reach.
  const int64_t fresh_from = stride < text_len ? text_len - stride + bos : 0;

  double nll_sum = 0;
  int64_t scored = 0, forwarded = 0;
  double kv_sum = 0, bpv_sum = 0, retained_sum = 0, body_bpv_sum = 0, paper_bpv_sum = 0, q_norm_sum = 0;
  int64_t kv_max = 0, offload_max = 0, side_max = 0;
  double kv_step_sum = 0;  // device bytes after every forward chunk: the memory held over time
  int64_t kv_steps = 0;
  const ModelInfo info = model.info();
  std::vector<int32_t> win(o.seq_len);
  PolicyTimes times;  // profile only
  AttentionPaths paths;
  const StepMode mode = default_step_mode(model);
  DecodeSteps::Stats step_stats;
  double prefill_s = 0, decode_s = 0;
  const auto t0 = std::chrono::steady_clock::now();

  // Windows go through the model `batch` at a time (one cache policy of `nb` sequences); each
  // window's numbers are the ones it gets alone, and they are summed in window order.
  JobBatch jb = job_batch(method, o.batch);
  const int64_t batch = jb.size;
  const auto dopt = at::TensorOptions().device(model.device()).dtype(at::kDouble);
  for (size_t w0 = 0; w0 < windows.size(); w0 += size_t(batch)) {
    if (ctx) check_cancel(*ctx, double(w0) / double(windows.size()));
    const int64_t nb = std::min<int64_t>(batch, int64_t(windows.size() - w0));
    at::Tensor host = at::empty({nb, o.seq_len}, at::kLong);
    std::vector<int64_t> first_scored(static_cast<size_t>(nb));
    for (int64_t b = 0; b < nb; ++b) {
      const size_t w = w0 + size_t(b);
      if (o.add_bos) win[0] = o.bos_id;
      std::copy(ids.begin() + windows[w].begin, ids.begin() + windows[w].begin + text_len, win.begin() + bos);
      host[b].copy_(ids_tensor(win.data(), o.seq_len)[0]);
      first_scored[size_t(b)] = std::max<int64_t>({1, o.warmup, w > 0 ? fresh_from : 0});
    }
    std::unique_ptr<KVCachePolicy> policy = make_policy(method);
    const KVCachePolicy& method_policy = *policy;  // unwrapped, for the QAQ-only figures below
    TimedPolicy* timed = nullptr;
    if (o.profile) {
      auto t = std::make_unique<TimedPolicy>(std::move(policy));
      timed = t.get();
      policy = std::move(t);
    }
    policy->reset(info, nb);
    jb.ran(nb);
    // The windows' NLL and their first non-finite logits rows accumulate on the device and are read
    // once, after the batch: no host round trip per chunk (token-by-token feeding included).
    at::Tensor nll_w = at::zeros({nb}, dopt), bad_w = at::full({nb}, INFINITY, dopt);
    const at::Tensor win_ids = model.device_ids(host);  // one upload per batch
    DecodeSteps steps(model, *policy, mode);
    for (int64_t c0 = 0; c0 < o.seq_len; c0 += chunk) {
      const int64_t n = std::min(chunk, o.seq_len - c0);
      const auto f0 = std::chrono::steady_clock::now();
      const at::Tensor logits = steps.forward(win_ids.narrow(1, c0, n), c0);  // [nb, n, V]
      forwarded += n * nb;
      at::Tensor row_bad = at::isfinite(logits).all(-1).logical_not();
      bad_w = at::minimum(bad_w, at::where(row_bad, at::arange(c0, c0 + n, dopt), INFINITY).amin(1));
      if (o.profile) {
        (void)logits.max().item<float>();  // profiling synchronizes each chunk
        (n > 1 ? prefill_s : decode_s) += std::chrono::duration<double>(std::chrono::steady_clock::now() - f0).count();
      }
      kv_step_sum += double(policy->memory().device_bytes());
      kv_steps += nb;
      // logits row j predicts window position c0 + j + 1; rows from j0 are scored (j0 differs only
      // for the first of overlapping windows: those batches score row by row)
      const int64_t j1 = std::min<int64_t>(n, o.seq_len - 1 - c0);
      auto j0_of = [&](int64_t b) { return std::max<int64_t>(0, first_scored[size_t(b)] - 1 - c0); };
      auto score = [&](int64_t b0, int64_t rows, int64_t j0) {
        if (j1 <= j0) return;
        at::Tensor lp = at::log_softmax(logits.narrow(0, b0, rows).narrow(1, j0, j1 - j0).to(at::kFloat), -1);
        at::Tensor tgt = win_ids.narrow(0, b0, rows).narrow(1, c0 + j0 + 1, j1 - j0);
        nll_w.narrow(0, b0, rows).sub_(lp.gather(2, tgt.unsqueeze(2)).squeeze(2).to(at::kDouble).sum(1));
        scored += rows * (j1 - j0);
      };
      bool same = true;
      for (int64_t b = 1; b < nb; ++b) same = same && j0_of(b) == j0_of(0);
      if (same) {
        score(0, nb, j0_of(0));
      } else {
        for (int64_t b = 0; b < nb; ++b) score(b, 1, j0_of(b));
      }
    }
    const at::Tensor read = at::stack({nll_w, bad_w}).cpu();
    for (int64_t b = 0; b < nb; ++b) {
      const double bad = read[1][b].item<double>();
      if (std::isfinite(bad))
        throw error("perplexity: {} logits became NaN/Inf at window {}, position {} (method {})", model.path(),
                    w0 + size_t(b), int64_t(bad), method_label(method));
      nll_sum += read[0][b].item<double>();
    }
    if (timed) times += timed->times();
    paths += policy->paths();
    step_stats.plain += steps.stats().plain;
    step_stats.eager += steps.stats().eager;
    step_stats.captures += steps.stats().captures;
    // the batch's memory is nb windows' (each sequence holds the same)
    const MemoryReport r = policy->memory();
    for (int64_t b = 0; b < nb; ++b) {
      kv_sum += double(r.device_bytes() / nb);
      kv_max = std::max(kv_max, r.device_bytes() / nb);
      bpv_sum += r.bpv(info, nb);
      body_bpv_sum += aqua_body_bpv(r);        // 0 for methods without AQUA blocks
      paper_bpv_sum += qaq_paper_bpv(method_policy);  // NaN for non-QAQ policies
      q_norm_sum += qaq_key_q_norm(method_policy);
      retained_sum += r.tokens_seen > 0 ? double(r.tokens_kept) / double(r.tokens_seen) : 1.0;
      offload_max = std::max(offload_max, (r.offload_bits() + 7) / 8 / nb);
      side_max = std::max(side_max, (r.side_bits() + 7) / 8 / nb);
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (ctx && ctx->progress) ctx->progress(1.0);
  if (scored == 0) throw error("perplexity: no token was scored (warmup {} >= seq_len {}?)", o.warmup, o.seq_len);

  const double nw = double(windows.size());
  const double nll = nll_sum / double(scored);
  const double bpv = bpv_sum / nw;
  nlohmann::json m;
  m["ppl"] = require_finite(std::exp(nll), "perplexity");
  m["nll"] = nll;
  m["tokens_scored"] = scored;
  m["windows"] = int64_t(windows.size());
  m["tokens_forwarded"] = forwarded;
  m["eval_seconds"] = seconds;
  m["tokens_per_s"] = seconds > 0 ? double(forwarded) / seconds : 0.0;
  write_paths(m, paths);
  write_decode_steps(m, mode, step_stats);
  jb.write(m);
  m["compute_dtype"] = scalar_name(model.dtype());
  m["kv_bytes"] = kv_sum / nw;
  m["kv_bytes_max"] = kv_max;
  m["kv_bytes_mean"] = kv_steps > 0 ? kv_step_sum / double(kv_steps) : 0.0;
  m["bpv"] = bpv;
  m["compression_ratio"] = bpv > 0 ? 16.0 / bpv : 0.0;
  m["retained_fraction"] = retained_sum / nw;
  if (body_bpv_sum > 0) m["body_bpv"] = body_bpv_sum / nw;
  if (std::isfinite(paper_bpv_sum)) m["paper_bpv"] = paper_bpv_sum / nw;
  if (std::isfinite(q_norm_sum)) m["q_norm"] = q_norm_sum / nw;  // QAQ keys: the value used (auto: calibrated)
  if (o.profile) write_profile(m, times, prefill_s, decode_s);
  m["offload_bytes"] = offload_max;
  m["side_bytes"] = side_max;
  return m;
}

ProtocolTraits perplexity_protocol() {
  ProtocolTraits t;
  t.name = "perplexity";
  t.summary = "perplexity over seq_len-token windows fed in chunks through the compressed cache";
  t.params = perplexity_params();
  t.run = run_perplexity;
  return t;
}

}  // namespace kvx
