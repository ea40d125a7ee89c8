#include "experiments/passkey.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <random>

#include "core/common/error.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "experiments/generation.h"
#include "experiments/text_windows.h"

namespace kvx {
namespace {
// The usual passkey filler (Mohtashami & Jaggi, 2023): digit-free, so the key is unique.
const char* kIntro =
    "There is an important pass key hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the pass key.\n";
const char* kFiller = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
const char* kNeedleHead = " The pass key is";
const char* kNeedleTail = ". Remember it.";
const char* kQuestion = "\nWhat is the pass key? The pass key is";
}  // namespace

PasskeyPrompt build_passkey_prompt(const Tokenizer& tok, int64_t length, double depth, const std::string& key) {
  if (!(depth >= 0 && depth <= 100)) throw error("passkey: depth must be in [0, 100] percent, got {}", depth);
  const auto intro = tok.encode(kIntro, true);
  const auto filler = tok.encode(kFiller, false);
  const auto head = tok.encode(kNeedleHead, false);
  const auto key_ids = tok.encode(" " + key, false);
  const auto tail = tok.encode(kNeedleTail, false);
  const auto question = tok.encode(kQuestion, false);
  const int64_t needle = int64_t(head.size() + key_ids.size() + tail.size());
  const int64_t fixed = int64_t(intro.size() + question.size()) + needle;
  if (length < fixed)
    throw error("passkey: length {} is too short for the prompt's {} fixed tokens (intro, needle, question)", length,
                fixed);
  PasskeyPrompt p;
  p.filler_tokens = length - fixed;
  const int64_t before = static_cast<int64_t>(std::nearbyint(depth / 100.0 * double(p.filler_tokens)));
  p.key_ids = key_ids;
  p.ids = intro;
  auto add_filler = [&](int64_t from, int64_t n) {  // the filler stream continues across the needle
    for (int64_t i = from; i < from + n; ++i) p.ids.push_back(filler[size_t(i) % filler.size()]);
  };
  add_filler(0, before);
  p.needle_pos = int64_t(p.ids.size());
  p.ids.insert(p.ids.end(), head.begin(), head.end());
  p.key_pos = int64_t(p.ids.size());
  p.ids.insert(p.ids.end(), key_ids.begin(), key_ids.end());
  p.ids.insert(p.ids.end(), tail.begin(), tail.end());
  add_filler(before, p.filler_tokens - before);
  p.ids.insert(p.ids.end(), question.begin(), question.end());
  return p;
}

std::string passkey_key(uint64_t seed, int64_t trial, int digits) {
  std::mt19937_64 rng(seed * 1000003ULL + uint64_t(trial));
  std::string key(1, char('1' + rng() % 9));
  while (int(key.size()) < digits) key += char('0' + rng() % 10);
  return key;
}

bool passkey_correct(const std::string& generated, const std::string& key) {
  size_t i = 0;
  while (i < generated.size() && !std::isdigit(static_cast<unsigned char>(generated[i]))) ++i;
  size_t j = i;
  while (j < generated.size() && std::isdigit(static_cast<unsigned char>(generated[j]))) ++j;
  return i < generated.size() && generated.substr(i, j - i) == key;
}

nlohmann::json run_passkey(const nlohmann::json& job, JobContext& ctx) {
  const auto& P = job.at("protocol");
  JobModel jm = job_model(job, ctx);
  const int64_t length = pint(P, "length"), trials = pint(P, "trials");
  const int digits = static_cast<int>(pint(P, "digits"));
  const double depth = pfloat(P, "depth");
  std::vector<std::string> keys;
  std::vector<PasskeyPrompt> prompts;
  std::vector<GreedyOptions> opts;
  int64_t answer_max = 0;
  for (int64_t t = 0; t < trials; ++t) {
    keys.push_back(passkey_key(uint64_t(pint(P, "seed")), t, digits));
    prompts.push_back(build_passkey_prompt(*jm.tokenizer, length, depth, keys.back()));
    GreedyOptions g;
    g.prefill_chunk = pint(P, "chunk");
    g.new_tokens = int64_t(prompts.back().key_ids.size()) + 4;
    if (length + g.new_tokens > jm.context)
      throw error("passkey: length {} plus {} answer tokens exceeds the model's context of {} tokens", length,
                  g.new_tokens, jm.context);
    answer_max = std::max(answer_max, g.new_tokens);
    opts.push_back(g);
  }
  std::vector<const std::vector<int32_t>*> ids;
  for (const auto& p : prompts) ids.push_back(&p.ids);
  auto policy = make_policy(job.at("method"));
  const int64_t chunk = opts[0].prefill_chunk > 0 ? opts[0].prefill_chunk : length;
  JobBatch jb = job_batch(job.at("method"), protocol_batch(P, *jm.model, length + answer_max, chunk));
  KvMemoryPeak mem;
  const auto outs = greedy_generate_all(
      *jm.model, *policy, ids, opts, jb.size, [&](double f) { check_cancel(ctx, f); },
      [&](int64_t rows) {
        mem.sample(*policy, *jm.model, rows);
        jb.ran(rows);
      });
  int64_t correct = 0, prefill_tokens = 0, needle_pos = 0;
  double prefill_s = 0;
  std::string first_answer;
  for (int64_t t = 0; t < trials; ++t) {
    const GreedyOutput& o = outs[size_t(t)];
    const std::string answer = jm.tokenizer->decode(o.tokens);
    correct += passkey_correct(answer, keys[size_t(t)]) ? 1 : 0;
    prefill_tokens += o.prefill_tokens;
    prefill_s += o.prefill_s;
    needle_pos += prompts[size_t(t)].needle_pos;
    if (t == 0) first_answer = answer;
  }
  check_cancel(ctx, 1.0);
  nlohmann::json m;
  m["accuracy"] = double(correct) / double(trials);
  m["correct"] = correct;
  m["trials"] = trials;
  m["needle_pos_mean"] = double(needle_pos) / double(trials);
  m["prefill_tok_s"] = prefill_s > 0 ? double(prefill_tokens) / prefill_s : 0.0;
  mem.write(m);
  m["sample"] = first_answer;
  write_paths(m, policy->paths());
  jb.write(m);
  m["policy"] = policy->name();
  return m;
}

ProtocolTraits passkey_protocol() {
  ProtocolTraits t;
  t.name = "passkey";
  t.summary = "needle retrieval: a random key hidden at depth% of length tokens of filler, greedy accuracy";
  t.params = {
      {"length", ParamType::Int, 1024, 16, 1 << 24, {}, "prompt length in tokens (at most the model's context)"},
      {"depth", ParamType::Float, 50.0, 0, 100, {}, "needle position, percent of the filler before it"},
      {"trials", ParamType::Int, 5, 1, 1 << 20, {}, "prompts (random keys) per cell"},
      {"digits", ParamType::Int, 5, 1, 18, {}, "digits of the key"},
      {"seed", ParamType::Int, 0, 0, 1e15, {}, "seed of the keys (same keys for every cell and method)"},
      {"chunk", ParamType::Int, 512, 0, 1 << 24, {}, "prefill chunk in tokens (0 = whole prompt at once)"},
      kBatchParam,
  };
  t.needs_dataset = false;
  t.run = run_passkey;
  return t;
}

}  // namespace kvx
