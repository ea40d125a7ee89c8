#include "experiments/distill_train.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/optim/adamw.h>
#include <torch/serialize.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "core/cache/kv_cache_policy.h"
#include "core/common/error.h"
#include "core/model/model.h"
#include "core/model/safetensors_writer.h"
#include "core/tokenizer/tokenizer.h"
#include "experiments/dataset_adapter.h"
#include "quantizers/registry.h"
#include "core/common/remove_tree.h"

namespace kvx {
namespace fs = std::filesystem;

DistillLoss distillation_loss(const at::Tensor& student_logits, const at::Tensor& teacher_logits,
                              const at::Tensor& targets, double temperature, double weight) {
  if (!student_logits.sizes().equals(teacher_logits.sizes()))
    throw error("distillation_loss: student and teacher logits differ in shape");
  if (temperature <= 0) throw error("distillation_loss: temperature must be > 0, got {}", temperature);
  const int64_t V = student_logits.size(-1);
  at::Tensor s = student_logits.reshape({-1, V}).to(at::kFloat);
  at::Tensor t = teacher_logits.reshape({-1, V}).to(at::kFloat).detach();
  at::Tensor y = targets.reshape({-1}).to(s.device(), at::kLong);
  if (y.size(0) != s.size(0)) throw error("distillation_loss: {} targets for {} positions", y.size(0), s.size(0));
  DistillLoss out;
  out.mle = at::nll_loss(at::log_softmax(s, -1), y);  // mean over positions
  at::Tensor log_ps = at::log_softmax(s / temperature, -1);
  at::Tensor log_pt = at::log_softmax(t / temperature, -1);
  // KL(p_t ‖ p_s) per position, averaged over positions (not summed: docs/methods/protocols.md,
  // "Distillation training").
  out.kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean();
  out.total = out.mle + (weight * temperature * temperature) * out.kl;
  return out;
}

std::string default_train_method() {
  // The reference recipe (docs/methods/protocols.md) trains for the adaptive attention-guided
  // policy; scaled to the 256-token default sequences: 25% budget (B = 64), K = 16 centroids,
  // prune every 32 tokens over the last 32 queries.
  if (find_method("attention_prune"))
    return R"({"key":"none","value":"none","policy":{"type":"attention_prune","max_cache_size":64,)"
           R"("num_clusters":16,"pruning_interval":32,"lookback_window":32}})";
  return "sink_window:s4:w64";
}

namespace {

nlohmann::json parse_method(const std::string& text) {
  nlohmann::json spec;
  try {
    if (!text.empty() && text[0] == '{') {
      try {
        spec = nlohmann::json::parse(text);
      } catch (const nlohmann::json::exception& e) {
        throw error("--method: invalid JSON spec: {}", e.what());
      }
    } else {
      spec = parse_method_shorthand(text);
    }
    return resolve_method(spec);
  } catch (const ParamError& e) {
    throw error("--method '{}': {}", text, e.what());
  }
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error("{}: cannot read", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_json(const std::string& path, const nlohmann::json& j) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream o(tmp, std::ios::trunc);
    o << j.dump(2) << "\n";
    if (!o) throw error("{}: write failed", tmp);
  }
  fs::rename(tmp, path);
}

std::string duration(double s) {
  if (!std::isfinite(s)) return "?";
  if (s < 60) return fmt::format("{:.0f}s", s);
  if (s < 3600) return fmt::format("{:.0f}m{:02.0f}s", std::floor(s / 60), std::fmod(s, 60));
  return fmt::format("{:.0f}h{:02.0f}m", std::floor(s / 3600), std::fmod(s / 60, 60));
}

// Fisher-Yates with mt19937_64 (std::shuffle's algorithm is implementation-defined; resume needs
// the same order everywhere).
std::vector<int64_t> epoch_order(int64_t n, int64_t seed, int64_t epoch) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[size_t(i)] = i;
  std::mt19937_64 rng(uint64_t(seed) * 1000003ull + uint64_t(epoch));
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = int64_t(rng() % uint64_t(i + 1));
    std::swap(p[size_t(i)], p[size_t(j)]);
  }
  return p;
}

double lr_at(const TrainOptions& o, int64_t step, int64_t total, int64_t warmup) {
  // step is 0-based: the update that produces step + 1.
  if (warmup > 0 && step < warmup) return o.lr * double(step + 1) / double(warmup);
  const int64_t rest = std::max<int64_t>(1, total - warmup);
  return o.lr * std::max(0.0, double(total - step) / double(rest));
}

// torch::nn::utils::clip_grad_norm_ (L2 over all gradients), without its header.
void clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm) {
  at::NoGradGuard ng;
  double sq = 0;
  for (const auto& p : params)
    if (p.grad().defined()) sq += p.grad().to(at::kDouble).pow(2).sum().item<double>();
  const double norm = std::sqrt(sq), coef = max_norm / (norm + 1e-6);
  if (coef < 1)
    for (const auto& p : params)
      if (p.grad().defined()) p.mutable_grad().mul_(coef);
}

// Options that must agree between a run and its --resume.
nlohmann::json run_identity(const TrainOptions& o, const nlohmann::json& method) {
  return {{"model", o.model},           {"data", o.data},
          {"method", method},           {"dtype", o.dtype},
          {"temperature", o.temperature}, {"distillation_weight", o.distillation_weight},
          {"lr", o.lr},                 {"weight_decay", o.weight_decay},
          {"max_grad_norm", o.max_grad_norm}, {"epochs", o.epochs},
          {"batch", o.batch},           {"max_length", o.max_length},
          {"chunk", o.chunk},           {"warmup_steps", o.warmup_steps},
          {"seed", o.seed},             {"max_steps", o.max_steps},
          {"max_sequences", o.max_sequences}};
}

struct Trainer {
  const TrainOptions& o;
  std::FILE* log;
  std::shared_ptr<CausalLM> model;
  nlohmann::json method;
  std::vector<int32_t> tokens;
  int64_t n_seq = 0;

  at::Tensor batch_ids(const std::vector<int64_t>& seqs) const {
    const int64_t B = int64_t(seqs.size()), T = o.max_length;
    at::Tensor ids = at::empty({B, T}, at::kLong);
    int64_t* p = ids.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) p[b * T + t] = tokens[size_t(seqs[size_t(b)] * T + t)];
    return ids.to(model->device());
  }

  // Teacher: full-precision cache, whole sequence at once, no graph.
  at::Tensor teacher_logits(const at::Tensor& ids) const {
    at::NoGradGuard no_grad;
    auto full = make_full_precision_policy();
    full->reset(model->info(), ids.size(0));
    return model->forward(ids, 0, *full);
  }

  // Student: chunk-wise through the compressing policy (graph recorded when grad mode is on).
  at::Tensor student_logits(const at::Tensor& ids) const {
    auto policy = make_policy(method);
    policy->reset(model->info(), ids.size(0));
    std::vector<at::Tensor> parts;
    const int64_t T = ids.size(1), c = o.chunk > 0 ? o.chunk : T;
    for (int64_t off = 0; off < T; off += c) {
      const int64_t len = std::min(c, T - off);
      parts.push_back(model->forward(ids.narrow(1, off, len), off, *policy));
    }
    return parts.size() == 1 ? parts[0] : at::cat(parts, 1);
  }

  DistillLoss loss_of(const at::Tensor& ids) const {
    const int64_t T = ids.size(1);
    at::Tensor t = teacher_logits(ids);
    at::Tensor s = student_logits(ids);
    return distillation_loss(s.narrow(1, 0, T - 1), t.narrow(1, 0, T - 1), ids.narrow(1, 1, T - 1), o.temperature,
                             o.distillation_weight);
  }

  // Mean loss over the first eval_batches batches in file order.
  nlohmann::json evaluate() const {
    at::NoGradGuard no_grad;
    const int64_t nb = std::min<int64_t>(o.eval_batches, n_seq / o.batch);
    double tot = 0, mle = 0, kl = 0;
    for (int64_t b = 0; b < nb; ++b) {
      std::vector<int64_t> seqs;
      for (int64_t i = 0; i < o.batch; ++i) seqs.push_back(b * o.batch + i);
      DistillLoss l = loss_of(batch_ids(seqs));
      tot += l.total.item<double>();
      mle += l.mle.item<double>();
      kl += l.kl.item<double>();
    }
    if (nb == 0) return nlohmann::json::object();
    return {{"loss", tot / nb}, {"mle", mle / nb}, {"kl", kl / nb}, {"batches", nb}};
  }
};

void check_options(const TrainOptions& o) {
  if (o.model.empty()) throw error("--model is required");
  if (o.out.empty()) throw error("--out is required");
  if (o.batch < 1) throw error("--batch must be >= 1, got {}", o.batch);
  if (o.max_length < 2) throw error("--max-length must be >= 2, got {}", o.max_length);
  if (o.chunk < 0) throw error("--chunk must be >= 0, got {}", o.chunk);
  if (o.epochs < 1) throw error("--epochs must be >= 1, got {}", o.epochs);
  if (o.temperature <= 0) throw error("--temperature must be > 0, got {}", o.temperature);
  if (o.distillation_weight < 0) throw error("--distillation-weight must be >= 0, got {}", o.distillation_weight);
  if (o.lr <= 0) throw error("--lr must be > 0, got {}", o.lr);
  if (o.weight_decay < 0) throw error("--weight-decay must be >= 0, got {}", o.weight_decay);
  if (o.max_steps < 0 || o.stop_after < 0 || o.max_sequences < 0 || o.eval_batches < 0)
    throw error("--max-steps, --stop-after, --max-sequences and --eval-batches must be >= 0");
  if (o.checkpoint_every < 1) throw error("--checkpoint-every must be >= 1, got {}", o.checkpoint_every);
}

}  // namespace

TrainResult distill_train(const TrainOptions& o, std::FILE* log) {
  check_options(o);
  if (!fs::is_directory(o.model)) throw error("{}: model folder not found (--model)", o.model);
  if (!fs::is_regular_file(o.data)) throw error("{}: data file not found (--data)", o.data);
  auto say = [&](const std::string& s) {
    if (log) {
      fmt::print(log, "{}\n", s);
      std::fflush(log);
    }
  };
  std::error_code mk;
  fs::create_directories(o.out, mk);
  if (mk || !fs::is_directory(o.out)) throw error("{}: cannot create output folder (--out): {}", o.out, mk.message());
  Trainer tr{o, log, nullptr, parse_method(o.method.empty() ? default_train_method() : o.method), {}, 0};
  const std::string ckpt = o.out + "/checkpoint";
  const nlohmann::json identity = run_identity(o, tr.method);

  // Resume state (weights come from the checkpoint folder, which is itself a model folder).
  int64_t start_step = 0;
  nlohmann::json state;
  if (o.resume) {
    const std::string sp = ckpt + "/state.json";
    if (!fs::exists(sp)) throw error("{}: no checkpoint to resume from (--resume)", sp);
    try {
      state = nlohmann::json::parse(read_text(sp));
    } catch (const nlohmann::json::exception& e) {
      throw error("{}: invalid JSON: {}", sp, e.what());
    }
    if (!state.contains("step") || !state.contains("options")) throw error("{}: missing 'step' or 'options'", sp);
    for (auto it = identity.begin(); it != identity.end(); ++it)
      if (state["options"].value(it.key(), nlohmann::json()) != it.value())
        throw error("{}: option '{}' was {} when the checkpoint was written, now {} (--resume needs the same options)",
                    sp, it.key(), state["options"].value(it.key(), nlohmann::json()).dump(), it.value().dump());
    start_step = state["step"].get<int64_t>();
  }
  tr.model = load_model(o.resume ? ckpt : o.model, o.device, o.dtype);
  tr.model->enable_training();
  at::manual_seed(uint64_t(o.seed));

  // Data.
  {
    const Tokenizer tok = Tokenizer::load(o.model + "/tokenizer.json");
    tr.tokens = tok.encode(load_stream(o.data, DatasetOptions{}), false);
  }
  tr.n_seq = int64_t(tr.tokens.size()) / o.max_length;
  if (o.max_sequences > 0) tr.n_seq = std::min(tr.n_seq, o.max_sequences);
  if (tr.n_seq < o.batch)
    throw error("{}: {} tokens give {} sequences of --max-length {}, fewer than --batch {}", o.data, tr.tokens.size(),
                tr.n_seq, o.max_length, o.batch);
  const int64_t per_epoch = tr.n_seq / o.batch;
  const int64_t total = o.max_steps > 0 ? o.max_steps : o.epochs * per_epoch;
  const int64_t warmup = o.warmup_steps >= 0 ? std::min(o.warmup_steps, total) : std::max<int64_t>(1, total / 10);
  if (start_step > total) throw error("{}/state.json: step {} is past the schedule ({} steps)", ckpt, start_step, total);

  std::vector<at::Tensor> params = tr.model->parameters();
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay));
  if (o.resume) {
    const std::string op = ckpt + "/optimizer.pt";
    if (!fs::exists(op)) throw error("{}: missing optimizer state (--resume)", op);
    try {
      torch::load(opt, op);
    } catch (const c10::Error& e) {
      throw error("{}: cannot read optimizer state: {}", op, e.what_without_backtrace());
    }
  }

  TrainResult res;
  res.start_step = start_step;
  res.total_steps = total;
  res.method_label = method_label(tr.method);
  say(fmt::format("[train] {} on {}: {} tokens, {} sequences of {}, {} steps/epoch, {} steps (warm-up {}), "
                  "student cache {}, chunk {}, device {} {}{}",
                  o.model, o.data, tr.tokens.size(), tr.n_seq, o.max_length, per_epoch, total, warmup,
                  res.method_label, o.chunk, o.device, o.dtype,
                  o.resume ? fmt::format(", resuming at step {}", start_step) : std::string()));

  if (o.resume && state.contains("eval_before")) {
    res.eval_before = state["eval_before"];
  } else if (o.eval_batches > 0) {
    res.eval_before = tr.evaluate();
    if (!res.eval_before.empty())
      say(fmt::format("[train] before: loss {:.4f} (mle {:.4f}, kl {:.5f}) on {} fixed batches",
                      res.eval_before["loss"].get<double>(), res.eval_before["mle"].get<double>(),
                      res.eval_before["kl"].get<double>(), res.eval_before["batches"].get<int64_t>()));
  }
  if (o.resume && state.contains("log"))
    for (const auto& e : state["log"])
      res.log.push_back({e["step"].get<int64_t>(), e["loss"].get<double>(), e["mle"].get<double>(),
                         e["kl"].get<double>(), e["lr"].get<double>()});

  auto log_json = [&]() {
    nlohmann::json l = nlohmann::json::array();
    for (const auto& e : res.log) l.push_back({{"step", e.step}, {"loss", e.loss}, {"mle", e.mle}, {"kl", e.kl}, {"lr", e.lr}});
    return l;
  };
  auto save_checkpoint = [&](int64_t step) {
    const std::string tmp = ckpt + ".new";
    std::error_code ec;
    kvx::remove_tree(tmp);
    SaveOptions so;
    so.source_dir = o.model;
    so.dtype = o.dtype;  // exact weights for resuming
    save_hf_model(*tr.model, tmp, so);
    torch::save(opt, tmp + "/optimizer.pt");
    write_json(tmp + "/state.json", {{"step", step}, {"total_steps", total}, {"options", identity},
                                      {"eval_before", res.eval_before}, {"log", log_json()}});
    kvx::remove_tree(ckpt);
    fs::rename(tmp, ckpt, ec);
    if (ec) throw error("{}: cannot move checkpoint into place: {}", ckpt, ec.message());
  };

  const auto t0 = std::chrono::steady_clock::now();
  int64_t step = start_step, tokens_done = 0;
  std::vector<int64_t> order;
  int64_t order_epoch = -1;
  const int64_t end = o.stop_after > 0 ? std::min(total, start_step + o.stop_after) : total;
  while (step < end) {
    const int64_t epoch = step / per_epoch, in_epoch = step % per_epoch;
    if (epoch != order_epoch) {
      order = epoch_order(tr.n_seq, o.seed, epoch);
      order_epoch = epoch;
    }
    std::vector<int64_t> seqs(order.begin() + in_epoch * o.batch, order.begin() + (in_epoch + 1) * o.batch);
    at::Tensor ids = tr.batch_ids(seqs);
    const double lr = lr_at(o, step, total, warmup);
    for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    DistillLoss l = tr.loss_of(ids);
    opt.zero_grad();
    l.total.backward();
    if (o.max_grad_norm > 0) clip_grad_norm(params, o.max_grad_norm);
    opt.step();
    ++step;
    tokens_done += ids.numel();
    TrainStepLog e{step, l.total.item<double>(), l.mle.item<double>(), l.kl.item<double>(), lr};
    if (!std::isfinite(e.loss)) throw error("training diverged at step {}: loss is not finite", step);
    res.log.push_back(e);
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (o.log_every > 0 && (step % o.log_every == 0 || step == end)) {
      const double per = el / double(step - start_step);
      say(fmt::format("[train] step {}/{} epoch {}  loss {:.4f} (mle {:.4f}, kl {:.5f})  lr {:.2e}  {:.0f} tok/s  "
                      "elapsed {}  ETA {}",
                      step, total, epoch + 1, e.loss, e.mle, e.kl, lr, tokens_done / std::max(el, 1e-9),
                      duration(el), duration(per * double(end - step))));
    }
    if (step % o.checkpoint_every == 0 || step == end) save_checkpoint(step);
  }
  res.end_step = step;
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  res.tokens_per_s = res.seconds > 0 ? tokens_done / res.seconds : 0;
  res.finished = step >= total;
  if (o.eval_batches > 0) {
    res.eval_after = tr.evaluate();
    if (!res.eval_after.empty())
      say(fmt::format("[train] after step {}: loss {:.4f} (mle {:.4f}, kl {:.5f}) on the same batches", step,
                      res.eval_after["loss"].get<double>(), res.eval_after["mle"].get<double>(),
                      res.eval_after["kl"].get<double>()));
  }
  if (res.finished) {
    SaveOptions so;
    so.source_dir = o.model;
    so.dtype = o.save_dtype;
    save_hf_model(*tr.model, o.out, so);
    say(fmt::format("[train] wrote {}/model.safetensors ({} dtype)", o.out, o.save_dtype));
  } else {
    say(fmt::format("[train] stopped at step {} of {}; continue with --resume", step, total));
  }
  write_json(o.out + "/training.json",
             {{"options", identity}, {"save_dtype", o.save_dtype}, {"method_label", res.method_label},
              {"start_step", res.start_step}, {"end_step", res.end_step}, {"total_steps", total},
              {"finished", res.finished}, {"seconds_this_run", res.seconds}, {"tokens_per_s", res.tokens_per_s},
              {"eval_before", res.eval_before}, {"eval_after", res.eval_after}, {"log", log_json()}});
  return res;
}

}  // namespace kvx
