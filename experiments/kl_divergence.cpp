#include "experiments/kl_divergence.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <mutex>

#include "core/common/error.h"
#include "core/common/sha256.h"
#include "core/model/model.h"
#include "experiments/text_windows.h"

namespace kvx {

at::Tensor kl_per_token(const at::Tensor& ref_logits, const at::Tensor& logits) {
  if (ref_logits.dim() != 2 || !ref_logits.sizes().equals(logits.sizes()))
    throw error("kl_per_token: expected two [N, V] tensors of equal shape");
  at::Tensor lp = at::log_softmax(ref_logits.to(at::kDouble), -1);
  at::Tensor lq = at::log_softmax(logits.to(at::kDouble), -1);
  // p·(log p − log q) with 0·log 0 = 0 where the reference puts no mass.
  at::Tensor p = lp.exp();
  at::Tensor terms = at::where(p > 0, p * (lp - lq), at::zeros_like(p));
  return terms.sum(-1);
}

at::Tensor top1_agree(const at::Tensor& ref_logits, const at::Tensor& logits) {
  return ref_logits.argmax(-1).eq(logits.argmax(-1));
}

void KlAccumulator::add(const at::Tensor& ref_logits, const at::Tensor& logits, const at::Tensor& targets) {
  at::Tensor kl = kl_per_token(ref_logits, logits).contiguous();
  const double* k = kl.data_ptr<double>();
  kl_.insert(kl_.end(), k, k + kl.numel());
  agree_ += top1_agree(ref_logits, logits).sum().item<double>();
  at::Tensor t = targets.to(at::kLong).view({-1, 1});
  at::Tensor lp = at::log_softmax(ref_logits.to(at::kDouble), -1).gather(1, t).view(-1);
  at::Tensor lq = at::log_softmax(logits.to(at::kDouble), -1).gather(1, t).view(-1);
  nll_ref_ -= lp.sum().item<double>();
  nll_ -= lq.sum().item<double>();
  dp2_ += (lq.exp() - lp.exp()).pow(2).sum().item<double>();
}

void KlAccumulator::write(nlohmann::json& m) const {
  const int64_t n = count();
  if (n == 0) throw error("kl_divergence: no tokens were scored");
  std::vector<double> s = kl_;
  std::sort(s.begin(), s.end());
  double sum = 0;
  for (double x : s) sum += x;
  // Nearest-rank percentiles: deterministic and free of interpolation conventions.
  auto pct = [&](double q) {
    const int64_t rank = int64_t(std::ceil(q * double(n))) - 1;
    return s[std::clamp<int64_t>(rank, 0, n - 1)];
  };
  m["kl_mean"] = require_finite(sum / n, "mean KL divergence");
  m["kl_median"] = pct(0.5);
  m["kl_p99"] = pct(0.99);
  m["kl_max"] = require_finite(s.back(), "max KL divergence");
  m["top1_agreement"] = agree_ / n;
  m["rms_dp"] = std::sqrt(dp2_ / n);
  const double ppl = require_finite(std::exp(nll_ / n), "perplexity");
  const double ppl_ref = require_finite(std::exp(nll_ref_ / n), "reference perplexity");
  m["ppl"] = ppl;
  m["ppl_ref"] = ppl_ref;
  m["ppl_ratio"] = ppl / ppl_ref;
  m["tokens_scored"] = n;
}

namespace {

// Full-precision log-probabilities per window, reused across the methods of a sweep.
class ReferenceCache {
 public:
  static ReferenceCache& instance() {
    static ReferenceCache c;
    return c;
  }
  // dir: the folder of the files (JobContext::shared_dir; $KVX_REFERENCE_CACHE overrides it); empty:
  // memory only.
  at::Tensor get(const std::string& key, const std::string& dir) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& e : mem_)
        if (e.first == key) return e.second;
    }
    at::Tensor t = read_disk(disk_path(key, dir));
    if (t.defined()) put_mem(key, t);
    return t;
  }
  void put(const std::string& key, const at::Tensor& t, const std::string& dir) {
    put_mem(key, t);
    write_disk(disk_path(key, dir), t);
  }

 private:
  static constexpr int64_t kMaxBytes = int64_t(1) << 30;

  void put_mem(const std::string& key, const at::Tensor& t) {
    std::lock_guard<std::mutex> lock(mu_);
    mem_.emplace_back(key, t);
    bytes_ += t.numel() * 4;
    while (bytes_ > kMaxBytes && mem_.size() > 1) {
      bytes_ -= mem_.front().second.numel() * 4;
      mem_.pop_front();
    }
  }
  static std::string disk_path(const std::string& key, const std::string& dir) {
    const char* env = std::getenv("KVX_REFERENCE_CACHE");
    const std::string d = env && *env ? std::string(env) : dir;
    if (d.empty()) return {};
    std::error_code ec;
    std::filesystem::create_directories(d, ec);
    return d + "/kl-ref-" + sha256_hex(key) + ".f32";
  }
  // File: int64 rows, int64 cols, then rows·cols float32 (host byte order; a cache, not an
  // exchange format).
  static at::Tensor read_disk(const std::string& path) {
    if (path.empty()) return {};
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return {};
    int64_t dims[2] = {0, 0};
    at::Tensor t;
    if (std::fread(dims, sizeof(int64_t), 2, f) == 2 && dims[0] > 0 && dims[1] > 0) {
      t = at::empty({dims[0], dims[1]}, at::kFloat);
      if (std::fread(t.data_ptr<float>(), sizeof(float), t.numel(), f) != size_t(t.numel())) t = at::Tensor();
    }
    std::fclose(f);
    return t;
  }
  static void write_disk(const std::string& path, const at::Tensor& t) {
    if (path.empty()) return;
    // Write then rename, so a concurrent reader never sees half a file.
    const std::string tmp = path + ".tmp" + std::to_string(reinterpret_cast<uintptr_t>(&t));
    FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) throw error("KVX_REFERENCE_CACHE: cannot write '{}'", tmp);
    at::Tensor c = t.contiguous();
    int64_t dims[2] = {c.size(0), c.size(1)};
    bool ok = std::fwrite(dims, sizeof(int64_t), 2, f) == 2 &&
              std::fwrite(c.data_ptr<float>(), sizeof(float), c.numel(), f) == size_t(c.numel());
    ok = std::fclose(f) == 0 && ok;
    if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
      std::remove(tmp.c_str());
      throw error("kl_divergence reference cache: cannot write '{}'", path);
    }
  }

  std::mutex mu_;
  std::deque<std::pair<std::string, at::Tensor>> mem_;
  int64_t bytes_ = 0;
};

// Logits [nb, len - 1 - from, V] on the CPU of positions [from, len - 1) of nb windows of len tokens
// fed together in chunks through `policy` (reset for nb sequences).
at::Tensor windows_logits(CausalLM& model, KVCachePolicy& policy, const std::vector<const int32_t*>& rows, int64_t len,
                             int64_t chunk, int64_t from) {
  const int64_t nb = int64_t(rows.size());
  policy.reset(model.info(), nb);
  std::vector<at::Tensor> parts;
  feed_rows(model, policy, ids_rows(rows, len), 0, chunk, [&](int64_t off, const at::Tensor& logits) {
    const int64_t lo = std::max(from, off), hi = std::min(len - 1, off + logits.size(1));
    if (hi > lo) parts.push_back(logits.narrow(1, lo - off, hi - lo).clone());  // stays on the device: no wait per chunk
  });
  return at::cat(parts, 1).cpu();
}

std::vector<ParamSpec> kl_params() {
  std::vector<ParamSpec> p = {
      {"seq_len", ParamType::Int, 512, 2, 1 << 20, {}, "tokens per window (at most the model's context)"},
      {"stride", ParamType::Int, 0, 0, 1 << 20, {}, "window start spacing in tokens (0 = seq_len)"},
      {"chunk", ParamType::Int, 32, 1, 1 << 20, {}, "tokens per forward call (1 = token-by-token decoding)"},
      {"max_windows", ParamType::Int, 4, 0, 1 << 30, {}, "windows evaluated (0 = all)"},
      {"warmup", ParamType::Int, 0, 0, 1 << 20, {}, "positions of each window not scored"},
      kBatchParam,
  };
  for (auto& d : dataset_params()) p.push_back(d);
  return p;
}

}  // namespace

nlohmann::json run_kl_divergence(const nlohmann::json& job, JobContext& ctx) {
  const auto& P = job.at("protocol");
  const int64_t seq_len = pint(P, "seq_len"), chunk = pint(P, "chunk"), warmup = pint(P, "warmup");
  const int64_t stride = pint(P, "stride") > 0 ? pint(P, "stride") : seq_len;
  if (warmup >= seq_len - 1) throw error("kl_divergence: warmup {} leaves nothing to score in seq_len {}", warmup, seq_len);
  JobModel jm = job_model(job, ctx);
  if (seq_len > jm.context)
    throw error("kl_divergence: seq_len {} exceeds the model's context of {} tokens", seq_len, jm.context);
  auto tokens = dataset_tokens(job, *jm.tokenizer, dataset_options(P));
  const auto windows = cut_windows(int64_t(tokens->size()), seq_len, stride, pint(P, "max_windows"));

  auto method = make_policy(job.at("method"));
  auto reference = make_full_precision_policy();
  // Everything the reference logits depend on; the method (and the batch) deliberately absent.
  nlohmann::json ref_id = P;
  ref_id.erase("batch");
  ref_id["model"] = job.at("model").value("hash", job.at("model").value("path", std::string()));
  ref_id["dtype"] = job.at("model").value("dtype", std::string("float32"));
  ref_id["device"] = ctx.device;
  ref_id["dataset"] = job.at("dataset").value("hash", job.at("dataset").value("path", std::string()));

  KlAccumulator acc;
  KvMemoryPeak mem;
  int64_t ref_reused = 0, ref_forwards = 0;
  // Windows go through the model `batch` at a time, each with the numbers it gets alone; the
  // reference runs only for the windows it has not computed before.
  JobBatch jb = job_batch(job.at("method"), protocol_batch(P, *jm.model, seq_len, chunk));
  const int64_t batch = jb.size;
  for (size_t w0 = 0; w0 < windows.size(); w0 += size_t(batch)) {
    check_cancel(ctx, double(w0) / windows.size());
    const size_t nb = std::min(size_t(batch), windows.size() - w0);
    const int64_t len = seq_len;
    std::vector<const int32_t*> rows, missing_rows;
    std::vector<std::string> keys;
    std::vector<at::Tensor> refs;
    std::vector<size_t> missing;
    for (size_t b = 0; b < nb; ++b) {
      rows.push_back(tokens->data() + windows[w0 + b].begin);
      ref_id["window"] = w0 + b;
      keys.push_back(ref_id.dump());
      refs.push_back(ReferenceCache::instance().get(keys.back(), ctx.shared_dir));
      if (refs.back().defined()) {
        ++ref_reused;
      } else {
        missing.push_back(b);
        missing_rows.push_back(rows.back());
      }
    }
    if (!missing.empty()) {
      const at::Tensor fresh = at::log_softmax(windows_logits(*jm.model, *reference, missing_rows, len, chunk, warmup), -1);
      for (size_t i = 0; i < missing.size(); ++i) {
        refs[missing[i]] = fresh[int64_t(i)].contiguous();
        ReferenceCache::instance().put(keys[missing[i]], refs[missing[i]], ctx.shared_dir);
      }
      ref_forwards += int64_t(missing.size());
    }
    const at::Tensor got = windows_logits(*jm.model, *method, rows, len, chunk, warmup);
    jb.ran(int64_t(nb));
    mem.sample(*method, *jm.model, int64_t(nb));
    for (size_t b = 0; b < nb; ++b)
      acc.add(refs[b], got[int64_t(b)], ids_tensor(rows[b] + warmup + 1, len - 1 - warmup)[0]);
  }
  check_cancel(ctx, 1.0);
  nlohmann::json m;
  acc.write(m);
  mem.write(m);
  m["windows"] = int64_t(windows.size());
  m["reference_windows_reused"] = ref_reused;
  m["reference_windows_computed"] = ref_forwards;
  jb.write(m);
  write_paths(m, method->paths());
  m["policy"] = method->name();
  return m;
}

ProtocolTraits kl_divergence_protocol() {
  ProtocolTraits t;
  t.name = "kl_divergence";
  t.summary = "KL(fp16 || method) of next-token distributions and top-1 agreement, same windows as fp16";
  t.params = kl_params();
  t.run = run_kl_divergence;
  return t;
}

}  // namespace kvx
