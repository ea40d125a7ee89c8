#include "experiments/long_ppl.h"

#include <ATen/ATen.h>

#include <cmath>

#include "core/common/error.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "experiments/text_windows.h"

namespace kvx {

BucketedNll::BucketedNll(int64_t bucket) : bucket_(bucket) {
  if (bucket < 1) throw error("long_ppl: bucket must be at least 1 token, got {}", bucket);
}

void BucketedNll::add(int64_t position, double nll) {
  const size_t b = size_t(position / bucket_);
  if (b >= nll_.size()) {
    nll_.resize(b + 1, 0.0);
    count_.resize(b + 1, 0);
  }
  nll_[b] += nll;
  ++count_[b];
}

std::string BucketedNll::label(int64_t from, int64_t to, int64_t bucket) {
  auto one = [&](int64_t x) { return bucket % 1024 == 0 && x > 0 ? std::to_string(x / 1024) + "k" : std::to_string(x); };
  return one(from) + "_" + one(to);
}

void BucketedNll::write(nlohmann::json& m) const {
  double total = 0;
  int64_t n = 0;
  nlohmann::json arr = nlohmann::json::array();
  for (size_t b = 0; b < nll_.size(); ++b) {
    if (count_[b] == 0) continue;
    const int64_t from = int64_t(b) * bucket_, to = from + bucket_;
    const std::string lab = label(from, to, bucket_);
    const double ppl = require_finite(std::exp(nll_[b] / double(count_[b])), "perplexity of bucket " + lab);
    m["ppl_" + lab] = ppl;
    m["tokens_" + lab] = count_[b];
    arr.push_back({{"from", from}, {"to", to}, {"tokens", count_[b]}, {"ppl", ppl}});
    total += nll_[b];
    n += count_[b];
  }
  if (n == 0) throw error("long_ppl: no tokens were scored");
  m["ppl"] = require_finite(std::exp(total / double(n)), "perplexity");
  m["tokens_scored"] = n;
  m["buckets"] = arr;
}

nlohmann::json run_long_ppl(const nlohmann::json& job, JobContext& ctx) {
  const auto& P = job.at("protocol");
  JobModel jm = job_model(job, ctx);
  int64_t seq_len = pint(P, "seq_len");
  if (seq_len == 0) seq_len = jm.context;
  if (seq_len > jm.context)
    throw error("long_ppl: seq_len {} exceeds the model's context of {} tokens", seq_len, jm.context);
  const int64_t max_docs = pint(P, "max_docs"), chunk = pint(P, "chunk");
  const DatasetOptions opt = dataset_options(P);

  std::vector<std::vector<int32_t>> docs;
  if (pstr(P, "documents") == "records") {
    const std::string path = job.at("dataset").at("path").get<std::string>();
    for (const auto& text : load_documents(path, opt)) {
      if (max_docs > 0 && int64_t(docs.size()) >= max_docs) break;
      auto ids = jm.tokenizer->encode(text, true);
      if (int64_t(ids.size()) > seq_len) ids.resize(size_t(seq_len));
      if (ids.size() >= 2) docs.push_back(std::move(ids));
    }
    if (docs.empty()) throw error("long_ppl: no document of the dataset has two or more tokens");
  } else {
    auto tokens = dataset_tokens(job, *jm.tokenizer, opt);
    for (const auto& w : cut_windows(int64_t(tokens->size()), seq_len, seq_len, max_docs))
      docs.emplace_back(tokens->begin() + w.begin, tokens->begin() + w.begin + w.len);
  }

  auto policy = make_policy(job.at("method"));
  BucketedNll acc(pint(P, "bucket"));
  KvMemoryPeak mem;
  int64_t longest = 0;
  for (size_t d = 0; d < docs.size(); ++d) {
    check_cancel(ctx, double(d) / docs.size());
    const auto& ids = docs[d];
    const int64_t n = int64_t(ids.size());
    longest = std::max(longest, n);
    at::Tensor targets = ids_tensor(ids.data(), n)[0];
    feed_chunks(*jm.model, *policy, ids.data(), n, chunk, [&](int64_t off, const at::Tensor& logits) {
      const int64_t len = std::min<int64_t>(logits.size(0), n - 1 - off);  // the last position predicts nothing
      if (len <= 0) return;
      at::Tensor lp = at::log_softmax(logits.narrow(0, 0, len).to(at::kDouble), -1);
      at::Tensor nll = -lp.gather(1, targets.narrow(0, off + 1, len).view({-1, 1}).to(lp.device())).view(-1).cpu();
      const double* p = nll.contiguous().data_ptr<double>();
      for (int64_t i = 0; i < len; ++i) acc.add(off + i + 1, p[i]);
    });
    mem.sample(*policy, *jm.model);
  }
  check_cancel(ctx, 1.0);
  nlohmann::json m;
  acc.write(m);
  mem.write(m);
  m["documents"] = int64_t(docs.size());
  m["longest_document"] = longest;
  write_paths(m, policy->paths());
  m["policy"] = policy->name();
  return m;
}

ProtocolTraits long_ppl_protocol() {
  ProtocolTraits t;
  t.name = "long_ppl";
  t.summary = "long-document perplexity by position bucket; the cache grows to the full document length";
  t.params = {
      {"seq_len", ParamType::Int, 0, 0, 1 << 24, {}, "document length in tokens (0 = the model's context)"},
      {"chunk", ParamType::Int, 256, 1, 1 << 24, {}, "tokens per forward call"},
      {"bucket", ParamType::Int, 1024, 1, 1 << 24, {}, "position bucket width in tokens"},
      {"max_docs", ParamType::Int, 2, 0, 1 << 30, {}, "documents evaluated (0 = all)"},
      {"documents", ParamType::Enum, "stream", -1e300, 1e300, {"stream", "records"},
       "stream: consecutive seq_len slices of the text; records: one document per JSONL record (truncated)"},
  };
  for (auto& d : dataset_params()) t.params.push_back(d);
  t.run = run_long_ppl;
  return t;
}

}  // namespace kvx
