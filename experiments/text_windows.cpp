#include "experiments/text_windows.h"

#include <ATen/ATen.h>

#ifdef KVX_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#endif

#include <algorithm>
#include <cmath>
#include <deque>
#include <map>
#include <mutex>

#include "core/common/error.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "experiments/model_cache.h"

namespace kvx {

std::shared_ptr<const Tokenizer> load_tokenizer_cached(const std::string& model_dir) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const Tokenizer>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(model_dir);
  if (it != cache.end()) return it->second;
  auto tok = std::make_shared<const Tokenizer>(Tokenizer::load(model_dir + "/tokenizer.json"));
  cache[model_dir] = tok;
  return tok;
}

JobModel job_model(const nlohmann::json& job, JobContext& ctx) {
  if (!ctx.models) throw error("protocol '{}' needs a model but the job context has none",
                               job.at("protocol").value("name", std::string("?")));
  const auto& spec = job.at("model");
  if (!spec.is_object() || !spec.contains("path") || !spec["path"].is_string())
    throw error("job: 'model' must be a mapping with 'path'");
  const std::string dtype = spec.value("dtype", std::string("float32"));
  JobModel jm;
  jm.model = ctx.models->get(spec, ctx.device, dtype);
  jm.tokenizer = load_tokenizer_cached(spec["path"].get<std::string>());
  jm.context = jm.model->config().max_positions;
  if (jm.context <= 0) jm.context = int64_t(1) << 62;
  return jm;
}

std::vector<ParamSpec> dataset_params() {
  return {
      {"format", ParamType::Enum, "auto", -1e300, 1e300, {"auto", "text", "jsonl"},
       "dataset file format (auto: *.jsonl is JSONL, anything else plain text)"},
      {"prompt_field", ParamType::String, "prompt", -1e300, 1e300, {}, "JSONL: field holding the prompt"},
      {"prompt_template", ParamType::String, "", -1e300, 1e300, {},
       "JSONL: prompt built from {field} placeholders (overrides prompt_field)"},
      {"reference_field", ParamType::String, "reference", -1e300, 1e300, {},
       "JSONL: field holding the reference (string or list of strings)"},
  };
}

DatasetOptions dataset_options(const nlohmann::json& p) {
  DatasetOptions o;
  o.format = p.value("format", o.format);
  o.prompt_field = p.value("prompt_field", o.prompt_field);
  o.prompt_template = p.value("prompt_template", o.prompt_template);
  o.reference_field = p.value("reference_field", o.reference_field);
  return o;
}

std::shared_ptr<const std::vector<int32_t>> dataset_tokens(const nlohmann::json& job, const Tokenizer& tok,
                                                            const DatasetOptions& opt) {
  const auto& ds = job.at("dataset");
  if (!ds.is_object() || !ds.contains("path") || !ds["path"].is_string())
    throw error("job: 'dataset' must be a mapping with 'path'");
  const std::string path = ds["path"].get<std::string>();
  const std::string key = fmt::format("{}|{}|{}|{}|{}|{}|{}", path, ds.value("hash", std::string()),
                                      static_cast<const void*>(&tok), opt.format, opt.prompt_field,
                                      opt.prompt_template, opt.reference_field);
  // A sweep runs many methods over the same text: keep the last few streams.
  static std::mutex mu;
  static std::deque<std::pair<std::string, std::shared_ptr<const std::vector<int32_t>>>> memo;
  {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& e : memo)
      if (e.first == key) return e.second;
  }
  auto ids = std::make_shared<const std::vector<int32_t>>(tok.encode(load_stream(path, opt), false));
  std::lock_guard<std::mutex> lock(mu);
  memo.emplace_back(key, ids);
  if (memo.size() > 4) memo.pop_front();
  return ids;
}

std::vector<Window> cut_windows(int64_t n_tokens, int64_t seq_len, int64_t stride, int64_t max_windows) {
  if (seq_len < 2) throw error("seq_len must be at least 2, got {}", seq_len);
  if (stride < 1) throw error("stride must be at least 1, got {}", stride);
  std::vector<Window> out;
  for (int64_t b = 0; b + seq_len <= n_tokens; b += stride) {
    out.push_back({b, seq_len});
    if (max_windows > 0 && int64_t(out.size()) >= max_windows) break;
  }
  if (out.empty())
    throw error("the dataset has {} tokens, fewer than one window of seq_len {}", n_tokens, seq_len);
  return out;
}

at::Tensor ids_tensor(const int32_t* ids, int64_t n) { return ids_rows({ids}, n); }

void feed_more(CausalLM& model, KVCachePolicy& policy, const int32_t* ids, int64_t n, int64_t pos0, int64_t chunk,
               const std::function<void(int64_t, const at::Tensor&)>& on_chunk) {
  if (n <= 0) return;
  feed_rows(model, policy, ids_tensor(ids, n), pos0, chunk, [&](int64_t off, const at::Tensor& logits) {
    if (on_chunk) on_chunk(off, logits[0]);
  });
}

void feed_rows(CausalLM& model, KVCachePolicy& policy, const at::Tensor& ids, int64_t pos0, int64_t chunk,
               const std::function<void(int64_t, const at::Tensor&)>& on_chunk) {
  const int64_t n = ids.size(1);
  if (chunk <= 0) chunk = n;
  DecodeSteps steps(model, policy, default_step_mode(model));
  const at::Tensor all = model.device_ids(ids);  // one upload, not one per chunk
  for (int64_t off = 0; off < n; off += chunk) {
    const int64_t len = std::min(chunk, n - off);
    at::Tensor logits = steps.forward(all.narrow(1, off, len), pos0 + off);
    if (on_chunk) on_chunk(off, logits);
  }
}

void feed_chunks(CausalLM& model, KVCachePolicy& policy, const int32_t* ids, int64_t n, int64_t chunk,
                 const std::function<void(int64_t, const at::Tensor&)>& on_chunk) {
  policy.reset(model.info(), 1);
  feed_more(model, policy, ids, n, 0, chunk, on_chunk);
}

void KvMemoryPeak::sample(const KVCachePolicy& policy, const CausalLM& model, int64_t batch) {
  const MemoryReport r = policy.memory();
  const int64_t b = r.device_bytes() / batch;
  if (b >= bytes) {
    bytes = b;
    bpv = r.bpv(model.info(), batch);
    retained = r.tokens_seen > 0 ? double(r.tokens_kept) / double(r.tokens_seen) : 1.0;
  }
}

void KvMemoryPeak::write(nlohmann::json& m) const {
  m["kv_bytes_max"] = bytes;
  m["bpv"] = bpv;
  m["compression_ratio"] = bpv > 0 ? 16.0 / bpv : 0.0;
  m["retained_fraction"] = retained;
}

void write_decode_steps(nlohmann::json& m, StepMode mode, const DecodeSteps::Stats& s) {
  m["decode_steps"] = {{"mode", step_mode_name(mode)}, {"plain", s.plain}, {"eager", s.eager}, {"runs", s.captures}};
}

void write_paths(nlohmann::json& m, const AttentionPaths& p) {
  m["kernel_path"] = p.kernel_path();
  m["attention_impl"] = p.attention_impl();
  nlohmann::json calls = p.kernel_calls;
  calls["chunk_only"] = p.chunk_only_calls;
  m["attention_calls"] = calls;
}

int64_t protocol_batch(const nlohmann::json& protocol, const CausalLM& model, int64_t seq_len, int64_t chunk) {
  const int64_t asked = protocol.value("batch", int64_t(1));
  if (asked > 0 || !model.device().is_cuda()) return std::max<int64_t>(1, asked);
  int64_t free_bytes = 0;
#ifdef KVX_WITH_CUDA
  size_t free = 0, total = 0;
  const c10::cuda::CUDAGuard guard(model.device());
  if (cudaMemGetInfo(&free, &total) == cudaSuccess) free_bytes = int64_t(free);
#endif
  const ModelConfig& c = model.config();
  const int64_t elem = c10::elementSize(model.dtype());
  const int64_t n = std::min(chunk, seq_len);
  const int64_t per_sequence = 2 * c.n_layers * c.n_kv_heads * c.head_dim * seq_len * elem +  // the cache
                               n * (c.hidden_size * 4 + 2 * c.intermediate_size) * elem +     // activations
                               n * c.vocab_size * 4 * 3;                                      // logits, log-softmax
  return std::clamp<int64_t>(free_bytes / 2 / std::max<int64_t>(1, per_sequence), 1, 64);
}

JobBatch job_batch(const nlohmann::json& method, int64_t room) {
  const bool batches = method_batches(method);
  return JobBatch{batches ? std::max<int64_t>(1, room) : 1, !batches && room > 1};
}

void JobBatch::write(nlohmann::json& m) const {
  m["batch"] = size;
  if (runs > 0) m["batch_mean"] = double(sequences) / double(runs);
  if (held_back) m["batch_note"] = "the method keeps state across sequences: its sequences ran one at a time";
}

std::vector<std::vector<size_t>> same_shape_batches(const std::vector<std::array<int64_t, 2>>& shapes,
                                                    int64_t batch) {
  std::vector<size_t> order(shapes.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return shapes[a] < shapes[b]; });
  std::vector<std::vector<size_t>> out;
  for (size_t i : order) {
    if (out.empty() || int64_t(out.back().size()) >= batch || shapes[out.back().front()] != shapes[i]) out.emplace_back();
    out.back().push_back(i);
  }
  return out;
}

at::Tensor ids_rows(const std::vector<const int32_t*>& rows, int64_t n) {
  at::Tensor t = at::empty({int64_t(rows.size()), n}, at::kLong);
  int64_t* p = t.data_ptr<int64_t>();
  for (size_t b = 0; b < rows.size(); ++b)
    for (int64_t i = 0; i < n; ++i) p[int64_t(b) * n + i] = rows[b][i];
  return t;
}

void check_cancel(JobContext& ctx, double progress) {
  if (ctx.cancel && *ctx.cancel) throw error("job cancelled");
  if (ctx.progress) ctx.progress(progress);
}

double require_finite(double x, const std::string& what) {
  if (!std::isfinite(x)) throw error("{} is not finite ({})", what, x);
  return x;
}

namespace {
const nlohmann::json& pget(const nlohmann::json& p, const char* key) {
  if (!p.contains(key)) throw error("protocol '{}' has no parameter '{}'", p.value("name", std::string("?")), key);
  return p[key];
}
}  // namespace

int64_t pint(const nlohmann::json& p, const char* key) { return pget(p, key).get<int64_t>(); }
double pfloat(const nlohmann::json& p, const char* key) { return pget(p, key).get<double>(); }
bool pbool(const nlohmann::json& p, const char* key) { return pget(p, key).get<bool>(); }
std::string pstr(const nlohmann::json& p, const char* key) { return pget(p, key).get<std::string>(); }

}  // namespace kvx
