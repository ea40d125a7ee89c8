#include "experiments/generation.h"

#include <ATen/ATen.h>

#include <array>
#include <chrono>
#include <deque>
#include <mutex>

#include "core/common/error.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "experiments/rouge.h"
#include "experiments/text_windows.h"

namespace kvx {
namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Greedy argmax of the last position of logits [B, T, V] as [B, 1] ids on the device.
at::Tensor argmax_last(const at::Tensor& logits) { return logits.select(1, logits.size(1) - 1).argmax(-1, true); }

std::vector<GreedyOutput> greedy_generate_rows(CausalLM& model, KVCachePolicy& policy,
                                               const std::vector<const std::vector<int32_t>*>& prompts,
                                               const GreedyOptions& opt) {
  const int64_t B = int64_t(prompts.size());
  if (B == 0 || prompts[0]->empty()) throw error("generation: empty prompt");
  const int64_t n = int64_t(prompts[0]->size());
  std::vector<const int32_t*> rows;
  for (const auto* p : prompts) {
    if (int64_t(p->size()) != n) throw error("generation: prompts decoded together must have one length");
    rows.push_back(p->data());
  }
  std::vector<GreedyOutput> out(static_cast<size_t>(B));
  if (opt.new_tokens <= 0) return out;
  auto t0 = Clock::now();
  at::Tensor next;  // [B, 1] on the device: fed straight back, no host round trip per step
  policy.reset(model.info(), B);
  feed_rows(model, policy, ids_rows(rows, n), 0, opt.prefill_chunk, [&](int64_t off, const at::Tensor& logits) {
    if (off + logits.size(1) == n) next = argmax_last(logits);
  });
  at::Tensor ids = at::empty({B, opt.new_tokens}, next.options());
  ids.narrow(1, 0, 1).copy_(next);
  // reading it ends the prefill's timing (an eos of -1 matches no id)
  const bool all_ended = next.eq(opt.eos).all().item<bool>();
  const double prefill_s = since(t0);
  double bytes_sum = double(policy.memory().device_bytes());
  // With an EOS, the ids are read every kEosCheck steps (steps past a row's EOS are computed and
  // dropped; the batch stops once every row has one); without one, only at the end.
  constexpr int64_t kEosCheck = 16;
  int64_t made = 1;  // ids generated so far
  t0 = Clock::now();
  DecodeSteps steps(model, policy, default_step_mode(model));
  if (!all_ended)
    while (made < opt.new_tokens) {
      next = argmax_last(steps.forward(next, n + made - 1));
      ids.narrow(1, made, 1).copy_(next);
      ++made;
      bytes_sum += double(policy.memory().device_bytes());
      if (opt.eos >= 0 && made % kEosCheck == 0 && ids.narrow(1, 0, made).eq(opt.eos).any(1).all().item<bool>()) break;
    }
  const at::Tensor host = ids.narrow(1, 0, made).cpu().contiguous();
  const double decode_s = since(t0);
  // Each row carries its share of the batch's time and memory, so sums over rows give rates.
  for (int64_t b = 0; b < B; ++b) {
    GreedyOutput& o = out[size_t(b)];
    const int64_t* h = host.data_ptr<int64_t>() + b * made;
    for (int64_t i = 0; i < made && !(opt.eos >= 0 && h[i] == opt.eos); ++i) o.tokens.push_back(int32_t(h[i]));
    o.prefill_s = prefill_s / double(B);
    o.decode_s = decode_s / double(B);
    o.prefill_tokens = n;
    o.decode_steps = made - 1;
    o.kv_bytes_mean = bytes_sum / double(B) / double(made);
    o.step_mode = steps.mode();
  }
  out[0].steps = steps.stats();  // the batch's forward calls, counted once
  return out;
}
}  // namespace

GreedyOutput greedy_generate(CausalLM& model, KVCachePolicy& policy, const std::vector<int32_t>& prompt,
                             const GreedyOptions& opt) {
  return std::move(greedy_generate_rows(model, policy, {&prompt}, opt)[0]);
}

std::vector<GreedyOutput> greedy_generate_all(CausalLM& model, KVCachePolicy& policy,
                                              const std::vector<const std::vector<int32_t>*>& prompts,
                                              const std::vector<GreedyOptions>& opts, int64_t batch,
                                              const std::function<void(double)>& progress,
                                              const std::function<void(int64_t)>& after_batch) {
  std::vector<std::array<int64_t, 2>> shapes;
  for (size_t i = 0; i < prompts.size(); ++i) shapes.push_back({int64_t(prompts[i]->size()), opts[i].new_tokens});
  std::vector<GreedyOutput> out(prompts.size());
  size_t done = 0;
  for (const auto& rows : same_shape_batches(shapes, batch)) {
    if (progress) progress(double(done) / double(prompts.size()));
    std::vector<const std::vector<int32_t>*> ps;
    for (size_t i : rows) ps.push_back(prompts[i]);
    auto got = greedy_generate_rows(model, policy, ps, opts[rows[0]]);
    for (size_t r = 0; r < rows.size(); ++r) out[rows[r]] = std::move(got[r]);
    if (after_batch) after_batch(int64_t(rows.size()));
    done += rows.size();
  }
  return out;
}

std::vector<int32_t> truncate_middle(const std::vector<int32_t>& ids, int64_t max_tokens) {
  if (max_tokens <= 0 || int64_t(ids.size()) <= max_tokens) return ids;
  const int64_t head = max_tokens / 2, tail = max_tokens - head;
  std::vector<int32_t> out(ids.begin(), ids.begin() + head);
  out.insert(out.end(), ids.end() - tail, ids.end());
  return out;
}

namespace {

struct Prompt {
  std::vector<int32_t> ids;
  std::vector<std::vector<int32_t>> refs;
};

std::vector<Prompt> build_prompts(const nlohmann::json& job, const JobModel& jm, int64_t prompt_len,
                                  int64_t new_tokens, int64_t max_prompts) {
  const auto& P = job.at("protocol");
  const DatasetOptions opt = dataset_options(P);
  const std::string path = job.at("dataset").at("path").get<std::string>();
  std::vector<Prompt> out;
  if (dataset_format(path, opt) == "jsonl") {
    for (const auto& r : load_records(path, opt)) {
      if (max_prompts > 0 && int64_t(out.size()) >= max_prompts) break;
      Prompt p;
      p.ids = truncate_middle(jm.tokenizer->encode(r.prompt, true), prompt_len);
      for (const auto& ref : r.references) p.refs.push_back(jm.tokenizer->encode(ref, false));
      out.push_back(std::move(p));
    }
    return out;
  }
  // Plain text: the text's own continuation is the reference.
  auto tokens = dataset_tokens(job, *jm.tokenizer, opt);
  const int64_t span = prompt_len + new_tokens;
  for (int64_t b = 0; b + span <= int64_t(tokens->size()); b += span) {
    if (max_prompts > 0 && int64_t(out.size()) >= max_prompts) break;
    Prompt p;
    p.ids.assign(tokens->begin() + b, tokens->begin() + b + prompt_len);
    p.refs.emplace_back(tokens->begin() + b + prompt_len, tokens->begin() + b + span);
    out.push_back(std::move(p));
  }
  if (out.empty())
    throw error("generation: the dataset has {} tokens, fewer than one prompt of {} + {} new tokens",
                tokens->size(), prompt_len, new_tokens);
  return out;
}

struct FullPrecisionRun {
  std::vector<std::vector<int32_t>> outputs;
  double prefill_s = 0, decode_s = 0;
  int64_t prefill_tokens = 0, decode_steps = 0;
};

// Pointers to the prompts' ids, in prompt order.
std::vector<const std::vector<int32_t>*> prompt_ids(const std::vector<Prompt>& prompts) {
  std::vector<const std::vector<int32_t>*> out;
  for (const auto& p : prompts) out.push_back(&p.ids);
  return out;
}

// fp16 continuations depend on everything but the method: computed once per worker per setting.
std::shared_ptr<const FullPrecisionRun> full_precision_run(const std::string& key, CausalLM& model,
                                                           const std::vector<Prompt>& prompts,
                                                           const GreedyOptions& g, int64_t batch, JobContext& ctx) {
  static std::mutex mu;
  static std::deque<std::pair<std::string, std::shared_ptr<const FullPrecisionRun>>> memo;
  {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& e : memo)
      if (e.first == key) return e.second;
  }
  auto run = std::make_shared<FullPrecisionRun>();
  auto fp = make_full_precision_policy();
  const auto outs = greedy_generate_all(model, *fp, prompt_ids(prompts), std::vector<GreedyOptions>(prompts.size(), g),
                                        batch, [&](double f) { check_cancel(ctx, 0.5 * f); }, nullptr);
  for (const GreedyOutput& o : outs) {
    run->outputs.push_back(o.tokens);
    run->prefill_s += o.prefill_s;
    run->decode_s += o.decode_s;
    run->prefill_tokens += o.prefill_tokens;
    run->decode_steps += o.decode_steps;
  }
  std::lock_guard<std::mutex> lock(mu);
  memo.emplace_back(key, run);
  if (memo.size() > 8) memo.pop_front();
  return run;
}

double best_rouge(const std::vector<int32_t>& cand, const std::vector<std::vector<int32_t>>& refs) {
  double best = 0;
  for (const auto& r : refs) best = std::max(best, rouge_l(cand, r).f1);
  return best;
}

double rate(int64_t n, double s) { return s > 0 ? double(n) / s : 0.0; }

}  // namespace

nlohmann::json run_generation(const nlohmann::json& job, JobContext& ctx) {
  const auto& P = job.at("protocol");
  JobModel jm = job_model(job, ctx);
  GreedyOptions g;
  g.new_tokens = pint(P, "new_tokens");
  g.prefill_chunk = pint(P, "chunk");
  g.eos = pbool(P, "stop_at_eos") ? jm.tokenizer->eos_id() : -1;
  int64_t prompt_len = pint(P, "prompt_len");
  if (prompt_len <= 0 || prompt_len + g.new_tokens > jm.context) prompt_len = jm.context - g.new_tokens;
  if (prompt_len < 1)
    throw error("generation: new_tokens {} leaves no room for a prompt in the model's context of {}", g.new_tokens,
                jm.context);
  const auto prompts = build_prompts(job, jm, prompt_len, g.new_tokens, pint(P, "max_prompts"));

  nlohmann::json ref_id = P;
  ref_id["model"] = job.at("model").value("hash", job.at("model").value("path", std::string()));
  ref_id["dtype"] = job.at("model").value("dtype", std::string("float32"));
  ref_id["device"] = ctx.device;
  ref_id["dataset"] = job.at("dataset").value("hash", job.at("dataset").value("path", std::string()));
  int64_t longest = 0;
  for (const auto& p : prompts) longest = std::max<int64_t>(longest, int64_t(p.ids.size()));
  const int64_t room = protocol_batch(P, *jm.model, longest + g.new_tokens, g.prefill_chunk > 0 ? g.prefill_chunk : longest);
  auto fp = full_precision_run(ref_id.dump(), *jm.model, prompts, g, room, ctx);
  JobBatch jb = job_batch(job.at("method"), room);

  auto inner = make_policy(job.at("method"));
  // profiling synchronizes every layer (and keeps decode steps eager): only when asked
  std::unique_ptr<TimedPolicy> timed;
  if (pbool(P, "profile")) timed = std::make_unique<TimedPolicy>(*inner);
  KVCachePolicy& method = timed ? static_cast<KVCachePolicy&>(*timed) : *inner;
  KvMemoryPeak mem;
  double rouge_fp = 0, agree = 0, exact = 0, div_pos = 0, rouge_ref = 0, rouge_ref_fp = 0, gen_len = 0;
  int64_t with_refs = 0;
  double prefill_s = 0, decode_s = 0, kv_mean_sum = 0;
  int64_t prefill_tokens = 0, decode_steps = 0;
  StepMode step_mode = StepMode::Eager;
  DecodeSteps::Stats step_stats;
  std::vector<int32_t> first_output;
  const auto outs = greedy_generate_all(
      *jm.model, method, prompt_ids(prompts), std::vector<GreedyOptions>(prompts.size(), g), jb.size,
      [&](double f) { check_cancel(ctx, 0.5 + 0.5 * f); }, [&](int64_t rows) {
        mem.sample(method, *jm.model, rows);
        jb.ran(rows);
      });
  for (size_t i = 0; i < prompts.size(); ++i) {
    const GreedyOutput& o = outs[i];
    kv_mean_sum += o.kv_bytes_mean;
    prefill_s += o.prefill_s;
    decode_s += o.decode_s;
    prefill_tokens += o.prefill_tokens;
    decode_steps += o.decode_steps;
    step_mode = o.step_mode;
    step_stats.plain += o.steps.plain;
    step_stats.eager += o.steps.eager;
    step_stats.captures += o.steps.captures;
    const auto& base = fp->outputs[i];
    rouge_fp += rouge_l(o.tokens, base).f1;
    agree += token_agreement(o.tokens, base);
    exact += o.tokens == base ? 1.0 : 0.0;
    size_t d = 0;
    while (d < o.tokens.size() && d < base.size() && o.tokens[d] == base[d]) ++d;
    div_pos += double(d);
    gen_len += double(o.tokens.size());
    if (!prompts[i].refs.empty()) {
      ++with_refs;
      rouge_ref += best_rouge(o.tokens, prompts[i].refs);
      rouge_ref_fp += best_rouge(base, prompts[i].refs);
    }
    if (i == 0) first_output = o.tokens;
  }
  check_cancel(ctx, 1.0);
  const double n = double(prompts.size());
  nlohmann::json m;
  m["prompts"] = int64_t(prompts.size());
  m["rouge_l_fp16"] = rouge_fp / n;
  m["token_agreement"] = agree / n;
  m["exact_match_fp16"] = exact / n;
  m["divergence_pos_mean"] = div_pos / n;
  m["new_tokens_mean"] = gen_len / n;
  if (with_refs > 0) {
    m["rouge_l_ref"] = rouge_ref / double(with_refs);
    m["rouge_l_ref_fp16"] = rouge_ref_fp / double(with_refs);
  }
  m["prefill_tok_s"] = require_finite(rate(prefill_tokens, prefill_s), "prefill tokens/s");
  m["decode_tok_s"] = require_finite(rate(decode_steps, decode_s), "decode tokens/s");
  m["fp16_prefill_tok_s"] = rate(fp->prefill_tokens, fp->prefill_s);
  m["fp16_decode_tok_s"] = rate(fp->decode_steps, fp->decode_s);
  mem.write(m);
  m["kv_bytes_mean"] = kv_mean_sum / double(prompts.size());
  if (timed) write_profile(m, timed->times(), prefill_s, decode_s);
  m["sample"] = jm.tokenizer->decode(first_output);
  m["sample_fp16"] = jm.tokenizer->decode(fp->outputs[0]);
  write_paths(m, inner->paths());
  write_decode_steps(m, step_mode, step_stats);
  jb.write(m);
  m["policy"] = inner->name();
  return m;
}

ProtocolTraits generation_protocol() {
  ProtocolTraits t;
  t.name = "generation";
  t.summary = "greedy continuation vs fp16 (ROUGE-L, token agreement) and references; tokens/s, peak KV bytes";
  t.params = {
      {"new_tokens", ParamType::Int, 32, 1, 1 << 20, {}, "tokens generated per prompt"},
      {"max_prompts", ParamType::Int, 8, 0, 1 << 30, {}, "prompts evaluated (0 = all records)"},
      {"prompt_len", ParamType::Int, 256, 0, 1 << 24, {},
       "text: prompt tokens per span; JSONL: longer prompts keep first and last halves (0 = context - new_tokens)"},
      {"chunk", ParamType::Int, 512, 0, 1 << 24, {}, "prefill chunk in tokens (0 = whole prompt at once)"},
      kBatchParam,
      {"stop_at_eos", ParamType::Bool, true, -1e300, 1e300, {}, "stop a continuation at the tokenizer's EOS"},
      {"profile", ParamType::Bool, false, -1e300, 1e300, {},
       "record per-phase times (prefill, decode, inside the cache policy, rest)"},
  };
  for (auto& d : dataset_params()) t.params.push_back(d);
  t.run = run_generation;
  return t;
}

}  // namespace kvx
