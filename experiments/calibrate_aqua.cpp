#include "experiments/calibrate_aqua.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>

#include <filesystem>
#include <random>
#include <fstream>
#include <sstream>

#include "core/common/build_info.h"
#include "core/common/error.h"
#include "core/common/sha256.h"
#include "core/grid/identity.h"
#include "core/higgs/grid.h"
#include "core/higgs/predictor_file.h"
#include "core/higgs/ridge.h"
#include "core/model/model.h"
#include "core/model/rope.h"
#include "core/tokenizer/tokenizer.h"

namespace kvx {
namespace {

// Records every layer's keys/values of one full-sequence forward; attention sees exactly the
// chunk (the whole sequence), i.e. the unquantized model.
class CapturePolicy final : public KVCachePolicy {
 public:
  std::vector<at::Tensor> k, v;
  void reset(const ModelInfo& m, int64_t) override {
    k.assign(size_t(m.n_layers), at::Tensor());
    v.assign(size_t(m.n_layers), at::Tensor());
  }
  AttnInputs update(int l, const at::Tensor& kn, const at::Tensor& vn, const StepInfo& s) override {
    if (s.pos0 != 0) throw error("calibration capture expects one forward per sequence");
    k[size_t(l)] = kn.clone();
    v[size_t(l)] = vn.clone();
    AttnInputs out;
    out.k = kn;
    out.v = vn;
    out.key_pos = at::arange(0, kn.size(2), at::TensorOptions().dtype(at::kLong).device(kn.device()));
    out.n_cached = 0;
    return out;
  }
  MemoryReport memory() const override { return {}; }
  std::string name() const override { return "capture"; }
};

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw error("{}: cannot read calibration corpus", path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void progress(bool quiet, int64_t done, int64_t total, const std::string& what) {
  if (quiet) return;
  const int w = 30, filled = int(w * done / std::max<int64_t>(total, 1));
  fmt::print(stderr, "\r[{}{}] {}/{} {}", std::string(size_t(filled), '#'), std::string(size_t(w - filled), ' '),
             done, total, what);
  if (done == total) fmt::print(stderr, "\n");
}

std::string model_hash(const std::string& dir) {
  grid::FileHasher h;
  return grid::model_identity(dir, h).hash;
}

}  // namespace

CalibrateResult calibrate_aqua(const CalibrateOptions& o) {
  if (o.out.empty()) throw error("kvx calibrate: an output file is required (--out FILE.h5)");
  if (std::filesystem::exists(o.out) && !o.force)
    throw error("{}: file exists; pass --force to overwrite it", o.out);
  if (o.nsamples < 2 || o.valid_nsamples < 1 || o.valid_nsamples >= o.nsamples)
    throw error("kvx calibrate: need nsamples >= 2 and 1 <= valid_nsamples < nsamples (got {}, {})", o.nsamples,
                o.valid_nsamples);
  auto model = load_model(o.model_dir, o.device, o.dtype);
  const ModelInfo info = model->info();
  const int64_t L = info.n_layers, C = info.n_kv_heads * info.head_dim;
  const int64_t seqlen = o.seqlen > 0 ? o.seqlen : model->config().max_positions;
  if (seqlen < 2) throw error("kvx calibrate: seqlen must be >= 2");
  if (model->config().max_positions > 0 && seqlen > model->config().max_positions)
    throw error("kvx calibrate: seqlen {} exceeds the model's context {}", seqlen, model->config().max_positions);

  // 1. data
  const auto tok = Tokenizer::load(o.model_dir + "/tokenizer.json");
  const std::string text = read_file(o.corpus);
  const auto ids = tok.encode(text, true);
  if (int64_t(ids.size()) <= seqlen)
    throw error("{}: corpus has {} tokens, fewer than seqlen + 1 = {}", o.corpus, ids.size(), seqlen + 1);
  std::mt19937_64 pick(o.seed);
  std::vector<int64_t> starts;
  for (int64_t i = 0; i < o.nsamples; ++i)
    starts.push_back(int64_t(pick() % uint64_t(int64_t(ids.size()) - seqlen)));

  // 2. propagation (full precision), capture pre-RoPE K and V rows per layer
  std::vector<std::vector<at::Tensor>> Ks(static_cast<size_t>(L)), Vs(static_cast<size_t>(L));
  at::NoGradGuard no_grad;
  for (int64_t i = 0; i < o.nsamples; ++i) {
    auto x = at::empty({1, seqlen}, at::kLong);
    for (int64_t t = 0; t < seqlen; ++t) x[0][t] = int64_t(ids[size_t(starts[size_t(i)] + t)]);
    CapturePolicy cap;
    cap.reset(info, 1);
    model->forward(x.to(model->device()), 0, cap);
    for (int64_t l = 0; l < L; ++l) {
      at::Tensor k = cap.k[size_t(l)];
      if (model->rope()) k = model->rope()->apply_range(k, 0, /*inverse=*/true);
      Ks[size_t(l)].push_back(aqua_rows(k).to(at::kFloat));
      Vs[size_t(l)].push_back(aqua_rows(cap.v[size_t(l)]).to(at::kFloat));
    }
    progress(o.quiet, i + 1, o.nsamples, "sequences propagated");
  }

  // 3. split
  std::vector<int64_t> perm(size_t(o.nsamples));
  for (int64_t i = 0; i < o.nsamples; ++i) perm[size_t(i)] = i;
  std::mt19937_64 shuf(o.seed + 1);
  for (int64_t i = o.nsamples - 1; i > 0; --i) std::swap(perm[size_t(i)], perm[size_t(shuf() % uint64_t(i + 1))]);
  std::vector<int64_t> valid(perm.begin(), perm.begin() + o.valid_nsamples), train(perm.begin() + o.valid_nsamples, perm.end());
  std::sort(valid.begin(), valid.end());
  std::sort(train.begin(), train.end());
  auto rows_of = [&](const std::vector<at::Tensor>& v, const std::vector<int64_t>& which) {
    std::vector<at::Tensor> parts;
    for (auto i : which) parts.push_back(v[size_t(i)]);
    return at::cat(parts, 0);
  };

  // 4-6. the loop
  const auto body = aqua_body_codec(o.quant, C), first = aqua_first_codec(o.quant, C);
  higgs::PredictorSet ps;
  ps.key.resize(size_t(L));
  ps.value.resize(size_t(L));
  const double nan = std::nan("");
  std::map<std::string, std::vector<double>> M;
  for (const char* n : {"key_relmse_train", "key_relmse_valid", "value_relmse_train", "value_relmse_valid",
                        "key_bits_valid", "value_bits_valid", "key_recon_relmse_valid", "value_recon_relmse_valid"})
    M[n] = std::vector<double>(size_t(L), nan);
  at::Tensor Kt_prev, Kv_prev, Vt_prev, Vv_prev;  // reconstructions of layer l−1 (train, valid)
  for (int64_t l = 0; l < L; ++l) {
    at::Tensor Kt = rows_of(Ks[size_t(l)], train), Kv = rows_of(Ks[size_t(l)], valid);
    at::Tensor Vt = rows_of(Vs[size_t(l)], train), Vv = rows_of(Vs[size_t(l)], valid);
    at::Tensor Kt_hat, Kv_hat, Vt_hat, Vv_hat;
    if (l == 0) {
      Kt_hat = first->qdq(Kt), Kv_hat = first->qdq(Kv), Vt_hat = first->qdq(Vt), Vv_hat = first->qdq(Vv);
    } else {
      auto fk = higgs::ridge_fit(Kt_prev, Kt, o.percdamp);
      auto pt = fk.apply(Kt_prev), pv = fk.apply(Kv_prev);
      M["key_relmse_train"][size_t(l)] = higgs::rel_mse(pt, Kt);
      M["key_relmse_valid"][size_t(l)] = higgs::rel_mse(pv, Kv);
      Kt_hat = pt + body->qdq(Kt - pt);
      Kv_hat = pv + body->qdq(Kv - pv);
      auto Xt = at::cat({Kt_hat, Vt_prev}, 1), Xv = at::cat({Kv_hat, Vv_prev}, 1);
      auto fv = higgs::ridge_fit(Xt, Vt, o.percdamp);
      auto qt = fv.apply(Xt), qv = fv.apply(Xv);
      M["value_relmse_train"][size_t(l)] = higgs::rel_mse(qt, Vt);
      M["value_relmse_valid"][size_t(l)] = higgs::rel_mse(qv, Vv);
      Vt_hat = qt + body->qdq(Vt - qt);
      Vv_hat = qv + body->qdq(Vv - qv);
      M["key_bits_valid"][size_t(l)] = higgs::equivalent_bits(M["key_relmse_valid"][size_t(l)]);
      M["value_bits_valid"][size_t(l)] = higgs::equivalent_bits(M["value_relmse_valid"][size_t(l)]);
      ps.key[size_t(l)] = fk;
      ps.value[size_t(l)] = fv;
    }
    M["key_recon_relmse_valid"][size_t(l)] = higgs::rel_mse(Kv_hat, Kv);
    M["value_recon_relmse_valid"][size_t(l)] = higgs::rel_mse(Vv_hat, Vv);
    Kt_prev = Kt_hat, Kv_prev = Kv_hat, Vt_prev = Vt_hat, Vv_prev = Vv_hat;
    if (!o.quiet) {
      progress(false, l + 1, L, "layers fitted");
      if (l == 0)
        fmt::print(stderr, "  layer 0: no predictor; reconstruction relMSE K {:.4g} V {:.4g}\n",
                   M["key_recon_relmse_valid"][0], M["value_recon_relmse_valid"][0]);
      else
        fmt::print(stderr,
                   "  layer {}: key relMSE train {:.4g} valid {:.4g} ({:.2f} bits) | value relMSE train {:.4g} "
                   "valid {:.4g} ({:.2f} bits) | recon K {:.4g} V {:.4g}\n",
                   l, M["key_relmse_train"][size_t(l)], M["key_relmse_valid"][size_t(l)], M["key_bits_valid"][size_t(l)],
                   M["value_relmse_train"][size_t(l)], M["value_relmse_valid"][size_t(l)],
                   M["value_bits_valid"][size_t(l)], M["key_recon_relmse_valid"][size_t(l)],
                   M["value_recon_relmse_valid"][size_t(l)]);
    }
  }

  ps.attrs = aqua_quantizer_identity(o.quant, C);
  ps.attrs["format"] = "kvx-aqua-predictors";
  ps.attrs["format_version"] = 1;
  ps.attrs["n_layers"] = L;
  ps.attrs["channels"] = C;
  ps.attrs["model_hash"] = model_hash(o.model_dir);
  ps.attrs["model_path"] = o.model_dir;
  ps.attrs["data_path"] = o.corpus;
  ps.attrs["data_hash"] = sha256_file(o.corpus);
  ps.attrs["nsamples"] = o.nsamples;
  ps.attrs["valid_nsamples"] = o.valid_nsamples;
  ps.attrs["seqlen"] = seqlen;
  ps.attrs["percdamp"] = o.percdamp;
  ps.attrs["seed"] = int64_t(o.seed);
  ps.attrs["compute_dtype"] = o.dtype;
  ps.attrs["calibration_key"] = calibration_key(o);
  ps.attrs["eval_code_version"] = std::string(kEvalCodeVersion);
  ps.metrics = M;
  if (auto parent = std::filesystem::path(o.out).parent_path(); !parent.empty())
    std::filesystem::create_directories(parent);
  higgs::write_predictor_file(o.out, ps, o.force);
  return {o.out, ps.attrs, M, ps};
}

std::string calibration_key(const CalibrateOptions& o) {
  nlohmann::json k;
  k["model_hash"] = model_hash(o.model_dir);
  k["data_hash"] = sha256_file(o.corpus);
  auto cfg = load_model_config(o.model_dir + "/config.json");
  const int64_t C = cfg.n_kv_heads * cfg.head_dim;
  k["quantizer"] = aqua_quantizer_identity(o.quant, C);
  k["nsamples"] = o.nsamples;
  k["valid_nsamples"] = o.valid_nsamples;
  k["seqlen"] = o.seqlen > 0 ? o.seqlen : cfg.max_positions;
  k["percdamp"] = o.percdamp;
  k["seed"] = int64_t(o.seed);
  k["dtype"] = o.dtype;
  k["eval_code_version"] = std::string(kEvalCodeVersion);
  return sha256_hex(k.dump());
}

CalibrateOptions calibrate_options_from_json(const nlohmann::json& cfg, const std::string& where) {
  if (!cfg.is_object()) throw error("{}: calibration config must be a mapping", where);
  CalibrateOptions o;
  nlohmann::json quant = {{"type", "aqua"}};
  for (auto it = cfg.begin(); it != cfg.end(); ++it) {
    const std::string& k = it.key();
    const auto& v = it.value();
    auto need = [&](bool ok, const char* what) {
      if (!ok) throw error("{}: '{}' must be {}, got {}", where, k, what, v.dump());
    };
    if (k == "model") need(v.is_string(), "a path"), o.model_dir = v;
    else if (k == "corpus") need(v.is_string(), "a path"), o.corpus = v;
    else if (k == "out") need(v.is_string(), "a path"), o.out = v;
    else if (k == "device") need(v.is_string(), "a string"), o.device = v;
    else if (k == "dtype") need(v.is_string(), "a string"), o.dtype = v;
    else if (k == "nsamples") need(v.is_number_integer(), "an integer"), o.nsamples = v;
    else if (k == "valid_nsamples") need(v.is_number_integer(), "an integer"), o.valid_nsamples = v;
    else if (k == "seqlen") need(v.is_number_integer(), "an integer"), o.seqlen = v;
    else if (k == "percdamp") need(v.is_number(), "a number"), o.percdamp = v;
    else if (k == "seed") need(v.is_number_integer(), "an integer"), o.seed = v.get<uint64_t>();
    else if (k == "force") need(v.is_boolean(), "true or false"), o.force = v;
    else if (k == "quantizer") {
      need(v.is_object(), "a mapping of aqua parameters");
      for (auto q = v.begin(); q != v.end(); ++q) quant[q.key()] = q.value();
    } else {
      throw error("{}: unknown key '{}' (expected model, corpus, out, device, dtype, nsamples, valid_nsamples, "
                  "seqlen, percdamp, seed, force, quantizer)", where, k);
    }
  }
  try {
    o.quant = aqua_settings(resolve_method({{"policy", quant}})["policy"]);
  } catch (const ParamError& e) {
    std::string p;
    for (size_t i = 1; i < e.path.size(); ++i) p += "." + e.path[i];
    throw error("{}: quantizer{}: {}", where, p, e.what());
  }
  if (o.model_dir.empty()) throw error("{}: 'model' (model folder) is required", where);
  return o;
}

nlohmann::json prepare_aqua_method(const nlohmann::json& m, const std::string& model_dir, const std::string& cache_dir,
                                   const std::string& device, const std::string& dtype) {
  if (!m.contains("policy") || m["policy"].value("type", "") != "aqua" || m["policy"].value("predictors", "") != "auto")
    return m;
  const auto& p = m["policy"];
  CalibrateOptions o;
  o.model_dir = model_dir;
  o.quant = aqua_settings(p);
  o.corpus = p.at("calib_corpus").get<std::string>();
  o.nsamples = p.at("calib_nsamples").get<int64_t>();
  o.valid_nsamples = p.at("calib_valid_nsamples").get<int64_t>();
  o.seqlen = p.at("calib_seqlen").get<int64_t>();
  o.percdamp = p.at("calib_percdamp").get<double>();
  o.seed = p.at("calib_seed").get<uint64_t>();
  o.device = device;
  o.dtype = dtype;
  o.quiet = true;
  o.out = cache_dir + "/aqua-" + calibration_key(o).substr(0, 24) + ".h5";
  if (!std::filesystem::exists(o.out)) calibrate_aqua(o);  // written atomically (tmp + rename)
  nlohmann::json out = m;
  out["policy"]["predictors"] = o.out;
  return out;
}

}  // namespace kvx
