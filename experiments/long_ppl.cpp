#include "experiments/long_ppl.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
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
  std::vector<std::array<int64_t, 2>> shapes;
  int64_t longest = 0;
  for (const auto& d : docs) {
    shapes.push_back({int64_t(d.size()), 0});
    longest = std::max(longest, int64_t(d.size()));
  }
  JobBatch jb = job_batch(job.at("method"), protocol_batch(P, *jm.model, longest, chunk));
  KvMemoryPeak mem;
  // Documents of one length go through the model `batch` at a time; each keeps its own NLL per
  // position, added to the buckets in document order afterwards (the sums of batch 1).
  std::vector<std::vector<double>> nll(docs.size());
  size_t done = 0;
  for (const auto& rows : same_shape_batches(shapes, jb.size)) {
    check_cancel(ctx, double(done) / docs.size());
    const int64_t nb = int64_t(rows.size()), n = shapes[rows[0]][0];
    std::vector<const int32_t*> ptrs;
    for (size_t d : rows) ptrs.push_back(docs[d].data());
    const at::Tensor ids = ids_rows(ptrs, n);
    std::vector<at::Tensor> parts;  // [nb, len] NLL of each chunk, on the device until the batch ends
    policy->reset(jm.model->info(), nb);
    feed_rows(*jm.model, *policy, ids, 0, chunk, [&](int64_t off, const at::Tensor& logits) {
      const int64_t len = std::min<int64_t>(logits.size(1), n - 1 - off);  // the last position predicts nothing
      if (len <= 0) return;
      at::Tensor lp = at::log_softmax(logits.narrow(1, 0, len).to(at::kDouble), -1);
      at::Tensor tgt = ids.narrow(1, off + 1, len).to(lp.device()).unsqueeze(2);
      parts.push_back(-lp.gather(2, tgt).squeeze(2));
    });
    mem.sample(*policy, *jm.model, nb);
    jb.ran(nb);
    const at::Tensor all = at::cat(parts, 1).cpu().contiguous();  // [nb, n - 1]
    for (int64_t b = 0; b < nb; ++b) {
      const double* p = all.data_ptr<double>() + b * (n - 1);
      nll[rows[size_t(b)]].assign(p, p + n - 1);
    }
    done += rows.size();
  }
  BucketedNll acc(pint(P, "bucket"));
  for (const auto& v : nll)
    for (size_t i = 0; i < v.size(); ++i) acc.add(int64_t(i) + 1, v[i]);
  check_cancel(ctx, 1.0);
  nlohmann::json m;
  acc.write(m);
  mem.write(m);
  m["documents"] = int64_t(docs.size());
  m["longest_document"] = longest;
  write_paths(m, policy->paths());
  jb.write(m);
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
      kBatchParam,
      {"documents", ParamType::Enum, "stream", -1e300, 1e300, {"stream", "records"},
       "stream: consecutive seq_len slices of the text; records: one document per JSONL record (truncated)"},
  };
  for (auto& d : dataset_params()) t.params.push_back(d);
  t.run = run_long_ppl;
  return t;
}

}  // namespace kvx
