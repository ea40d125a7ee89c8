#include "quantizers/aqua.h"

#include <ATen/ATen.h>
#include <c10/util/StringUtil.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>

#include "core/cache/affine_quantizer.h"
#include "core/common/error.h"
#include "core/higgs/grid.h"
#include "core/higgs/higgs_quantizer.h"
#include "core/higgs/predictor_file.h"
#include "core/model/rope.h"
#include "quantizers/selective_int8.h"

namespace kvx {

AquaSettings aqua_settings(const nlohmann::json& p) {
  AquaSettings s;
  s.d = p.at("edenn_d").get<int>();
  s.n = p.at("edenn_n").get<int>();
  s.g = p.at("hadamard_groupsize").get<int64_t>();
  s.first_d = p.at("first_edenn_d").get<int>();
  s.first_n = p.at("first_edenn_n").get<int>();
  s.not_quantize_first_layer = p.at("not_quantize_first_layer").get<bool>();
  s.backbone = p.at("backbone").get<std::string>();
  s.affine_bits = p.at("affine_bits").get<int>();
  s.first_affine_bits = p.at("first_affine_bits").get<int>();
  s.affine_group = p.at("affine_group").get<int64_t>();
  s.recent_buffer_size = p.at("recent_buffer_size").get<int64_t>();
  s.prefix_size = p.at("prefix_size").get<int64_t>();
  s.predictors = p.at("predictors").get<std::string>();
  s.grid_dir = p.at("grid_dir").get<std::string>();
  return s;
}

// --- row codecs ---------------------------------------------------------------------------

namespace {

class HiggsCoded final : public AquaCoded {
 public:
  HiggsCoded(higgs::HiggsCodes c, const higgs::Grid* g) : c_(std::move(c)), grid_(g) {}
  at::Tensor decode(at::ScalarType dtype, at::Device device) const override {
    return higgs::higgs_dequantize(c_, *grid_, dtype, device);
  }
  void account(const std::string& prefix, std::vector<MemorySegment>& out) const override {
    out.push_back({prefix + ".codes", c_.rows * c_.C, c_.code_bits(), MemorySegment::kDevice});
    out.push_back({prefix + ".scales", c_.scales.numel(), c_.scale_bits(), MemorySegment::kDevice});
  }

 private:
  higgs::HiggsCodes c_;
  const higgs::Grid* grid_;
};

class HiggsRowCodec final : public AquaRowCodec {
 public:
  HiggsRowCodec(int d, int n, int64_t g, int64_t C, const std::string& dir)
      : grid_(&higgs::grid_for(d, n, dir)), g_(g), C_(C) {}
  std::unique_ptr<AquaCoded> encode(const at::Tensor& rows) const override {
    return std::make_unique<HiggsCoded>(higgs::higgs_quantize(rows, *grid_, g_), grid_);
  }
  nlohmann::json identity() const override {
    return {{"type", "higgs"}, {"d", grid_->d}, {"n", grid_->n}, {"g", g_},
            {"g_eff", higgs::g_eff(g_, C_)}, {"grid_hash", grid_->hash()}};
  }
  int64_t side_bits() const override { return grid_->points.numel() * 32; }

 private:
  const higgs::Grid* grid_;
  int64_t g_, C_;
};

class AffineCoded final : public AquaCoded {
 public:
  explicit AffineCoded(AffineBlock b) : b_(std::move(b)) {}
  at::Tensor decode(at::ScalarType dtype, at::Device device) const override {
    return affine_dequantize(b_, at::kFloat).reshape({b_.N, b_.D}).to(device).to(dtype);
  }
  void account(const std::string& prefix, std::vector<MemorySegment>& out) const override {
    out.push_back({prefix + ".codes", b_.values(), b_.code_bits(), MemorySegment::kDevice});
    out.push_back({prefix + ".scales", b_.groups(), b_.scale_bits(), MemorySegment::kDevice});
    out.push_back({prefix + ".shifts", b_.groups(), b_.shift_bits(), MemorySegment::kDevice});
  }

 private:
  AffineBlock b_;
};

class AffineRowCodec final : public AquaRowCodec {
 public:
  AffineRowCodec(int bits, int64_t group) : bits_(bits), group_(group) {}
  std::unique_ptr<AquaCoded> encode(const at::Tensor& rows) const override {
    auto x = rows.to(at::kFloat).reshape({1, 1, rows.size(0), rows.size(1)});
    return std::make_unique<AffineCoded>(affine_quantize(x, bits_, group_, GroupAxis::Token, at::kHalf));
  }
  nlohmann::json identity() const override { return {{"type", "affine"}, {"bits", bits_}, {"group", group_}}; }

 private:
  int bits_;
  int64_t group_;
};

class FpCoded final : public AquaCoded {
 public:
  explicit FpCoded(at::Tensor x) : x_(std::move(x)) {}
  at::Tensor decode(at::ScalarType dtype, at::Device device) const override { return x_.to(device).to(dtype); }
  void account(const std::string& prefix, std::vector<MemorySegment>& out) const override {
    out.push_back({prefix + ".fp", x_.numel(), x_.numel() * 16, MemorySegment::kDevice});
  }

 private:
  at::Tensor x_;
};

// not_quantize_first_layer: layer 0 kept at 16 bits (fp16 storage; the compute copy is exact).
class FpRowCodec final : public AquaRowCodec {
 public:
  std::unique_ptr<AquaCoded> encode(const at::Tensor& rows) const override {
    return std::make_unique<FpCoded>(rows.clone());
  }
  nlohmann::json identity() const override { return {{"type", "fp16"}}; }
};

}  // namespace

std::shared_ptr<const AquaRowCodec> aqua_body_codec(const AquaSettings& s, int64_t C) {
  if (s.backbone == "affine") return std::make_shared<AffineRowCodec>(s.affine_bits, s.affine_group);
  return std::make_shared<HiggsRowCodec>(s.d, s.n, s.g, C, s.grid_dir);
}

std::shared_ptr<const AquaRowCodec> aqua_first_codec(const AquaSettings& s, int64_t C) {
  if (s.not_quantize_first_layer) return std::make_shared<FpRowCodec>();
  if (s.backbone == "affine") return std::make_shared<AffineRowCodec>(s.first_affine_bits, s.affine_group);
  return std::make_shared<HiggsRowCodec>(s.first_d, s.first_n, s.g, C, s.grid_dir);
}

nlohmann::json aqua_quantizer_identity(const AquaSettings& s, int64_t C) {
  nlohmann::json id;
  // Keep the identities alive while iterating (items() only references its object).
  const nlohmann::json body = aqua_body_codec(s, C)->identity(), first = aqua_first_codec(s, C)->identity();
  for (auto it = body.begin(); it != body.end(); ++it) id["quantizer_" + it.key()] = it.value();
  for (auto it = first.begin(); it != first.end(); ++it) id["first_quantizer_" + it.key()] = it.value();
  return id;
}

at::Tensor aqua_rows(const at::Tensor& x) {
  return x.permute({0, 2, 1, 3}).reshape({x.size(0) * x.size(2), x.size(1) * x.size(3)});
}

at::Tensor aqua_unrows(const at::Tensor& rows, int64_t B, int64_t H, int64_t D) {
  return rows.reshape({B, -1, H, D}).permute({0, 2, 1, 3}).contiguous();
}

double aqua_body_bpv(const MemoryReport& r) {
  int64_t bits = 0, values = 0;
  auto ends_with = [](const std::string& s, const std::string& e) {
    return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0;
  };
  for (const auto& s : r.segments) {
    if (s.name.rfind("body.", 0) != 0) continue;
    bits += s.bits;
    if (ends_with(s.name, ".codes") || ends_with(s.name, ".fp")) values += s.elements;
  }
  return values > 0 ? double(bits) / double(values) : 0.0;
}

// --- the policy ---------------------------------------------------------------------------

namespace {

at::Tensor cat_tokens(const std::vector<at::Tensor>& parts) {
  std::vector<at::Tensor> nz;
  for (const auto& p : parts)
    if (p.defined() && p.size(2) > 0) nz.push_back(p);
  if (nz.empty()) return at::Tensor();
  return nz.size() == 1 ? nz[0] : at::cat(nz, 2);
}

// Policies are built once per window: read each file once per process (keyed by path, size
// and modification time, so a recalibrated file is re-read).
const higgs::PredictorSet& cached_predictors(const std::string& path) {
  static std::mutex mu;
  static std::map<std::string, std::pair<std::string, higgs::PredictorSet>> cache;
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  const auto stamp = ec ? std::string("?") : std::to_string(size) + "@" +
      std::to_string(std::filesystem::last_write_time(path, ec).time_since_epoch().count());
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(path);
  if (it == cache.end() || it->second.first != stamp)
    it = cache.insert_or_assign(path, std::make_pair(stamp, higgs::read_predictor_file(path))).first;
  return it->second.second;
}

class AquaPolicyImpl final : public AquaPolicy {
 public:
  explicit AquaPolicyImpl(AquaSettings s) : s_(std::move(s)) {
    if (s_.prefix_size < 0) throw error("aqua: prefix_size must be >= 0, got {}", s_.prefix_size);
    if (s_.recent_buffer_size < 1) throw error("aqua: recent_buffer_size must be >= 1, got {}", s_.recent_buffer_size);
    if (s_.predictors == "auto")
      throw error("aqua: predictors: auto must be resolved to a calibration file before the run "
                  "(prepare_aqua_method in experiments/calibrate_aqua.h)");
    if (s_.predictors != "none") preds_ = cached_predictors(s_.predictors);
  }

  void reset(const ModelInfo& m, int64_t batch) override {
    info_ = m;
    B_ = batch;
    H_ = m.n_kv_heads;
    D_ = m.head_dim;
    C_ = H_ * D_;
    L_ = m.n_layers;
    if (!body_ || body_C_ != C_) {
      body_ = aqua_body_codec(s_, C_);
      first_ = aqua_first_codec(s_, C_);
      body_C_ = C_;
      if (s_.predictors != "none") {
        nlohmann::json expect = aqua_quantizer_identity(s_, C_);
        expect["n_layers"] = L_;
        expect["channels"] = C_;
        higgs::check_predictors(preds_, expect, s_.predictors);
      }
    }
    layers_.assign(size_t(L_), Layer{});
    blocks_.clear();
    pending_ = Block{};
    flush_ = false;
    seen_ = 0;
    buf_start_ = -1;
    next_layer_ = 0;
  }

  AttnInputs update(int l, const at::Tensor& k_new, const at::Tensor& v_new, const StepInfo& s) override {
    if (l != next_layer_) throw error("aqua policy: layers must be visited in order (expected layer {}, got {})", next_layer_, l);
    next_layer_ = (l + 1) % int(L_);
    if (k_new.size(0) != B_ || k_new.size(1) != H_ || k_new.size(3) != D_)
      throw error("aqua policy: chunk shape {} does not match reset() (B={}, Hkv={}, D={})", c10::str(k_new.sizes()), B_, H_, D_);
    Layer& Ly = layers_[size_t(l)];
    if (s.pos0 != Ly.seen)
      throw error("aqua policy: layer {} got a chunk at position {} after {} tokens", l, s.pos0, Ly.seen);
    const int64_t n = k_new.size(2);
    const int64_t n_pre = std::clamp<int64_t>(s_.prefix_size - s.pos0, 0, n);
    if (n_pre > 0) {
      Ly.pk = cat_tokens({Ly.pk, k_new.narrow(2, 0, n_pre)}).clone();
      Ly.pv = cat_tokens({Ly.pv, v_new.narrow(2, 0, n_pre)}).clone();
    }
    if (n > n_pre) {
      if (!Ly.bk.defined() || Ly.bk.size(2) == 0) Ly.buf_start = s.pos0 + n_pre;
      Ly.bk = cat_tokens({Ly.bk, k_new.narrow(2, n_pre, n - n_pre)});
      Ly.bv = cat_tokens({Ly.bv, v_new.narrow(2, n_pre, n - n_pre)});
    }
    Ly.seen = s.pos0 + n;

    // Return [prefix, blocks, buffer]; the buffer ends with this chunk, exact.
    std::vector<at::Tensor> ks{Ly.pk}, vs{Ly.pv};
    for (const auto& b : blocks_) {
      ks.push_back(b.k_att[size_t(l)]);
      vs.push_back(b.v_att[size_t(l)]);
    }
    ks.push_back(Ly.bk);
    vs.push_back(Ly.bv);
    AttnInputs out;
    out.k = cat_tokens(ks);
    out.v = cat_tokens(vs);
    const int64_t N = out.k.size(2);
    out.key_pos = at::arange(Ly.seen - N, Ly.seen, at::TensorOptions().dtype(at::kLong).device(k_new.device()));
    out.n_cached = N - n;

    if (l == 0) flush_ = Ly.bk.defined() && Ly.bk.size(2) >= s_.recent_buffer_size;
    if (flush_) {
      const Rope* rope = s.rope ? s.rope : info_.rope;
      encode_layer(l, Ly, rope);
      if (l == L_ - 1) {
        pending_.prev_k = at::Tensor();
        pending_.prev_v = at::Tensor();
        blocks_.push_back(std::move(pending_));
        pending_ = Block{};
        flush_ = false;
      }
    }
    if (l == L_ - 1) seen_ = Ly.seen;
    return out;
  }

  MemoryReport memory() const override {
    std::vector<MemorySegment> segs;
    auto add = [&](const std::string& name, int64_t el, int64_t bits, MemorySegment::Kind kind) {
      for (auto& s : segs)
        if (s.name == name) {
          s.elements += el;
          s.bits += bits;
          return;
        }
      segs.push_back({name, el, bits, kind});
    };
    auto fp = [&](const std::string& name, const at::Tensor& t) {
      if (t.defined()) add(name, t.numel(), t.numel() * 16, MemorySegment::kDevice);
    };
    for (const auto& Ly : layers_) {
      fp("prefix.k", Ly.pk);
      fp("prefix.v", Ly.pv);
      fp("buffer.k", Ly.bk);
      fp("buffer.v", Ly.bv);
    }
    int64_t scratch = 0;
    for (const auto& b : blocks_) {
      for (int64_t l = 0; l < L_; ++l) {
        std::vector<MemorySegment> tmp;
        const std::string pre = l == 0 ? "body.first." : "body.";
        b.ck[size_t(l)]->account(pre + "k", tmp);
        b.cv[size_t(l)]->account(pre + "v", tmp);
        for (const auto& t : tmp) add(t.name, t.elements, t.bits, MemorySegment::kDevice);
        scratch += (b.k_att[size_t(l)].numel() + b.v_att[size_t(l)].numel() + b.k_hat[size_t(l)].numel()) * 16;
      }
    }
    if (s_.predictors != "none") add("side.predictors", 0, preds_.side_bits(), MemorySegment::kSide);
    if (body_) add("side.grids", 0, body_->side_bits() + first_->side_bits(), MemorySegment::kSide);
    add("scratch.decoded", 0, scratch, MemorySegment::kSide);
    MemoryReport r;
    r.segments = std::move(segs);
    r.tokens_seen = seen_;
    r.tokens_kept = seen_;
    return r;
  }

  std::string name() const override { return "aqua"; }

  std::vector<int64_t> block_sizes() const override {
    std::vector<int64_t> out;
    for (const auto& b : blocks_) out.push_back(b.t1 - b.t0);
    return out;
  }

  std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>> decode_block_from_codes(size_t bi) const override {
    const Block& b = blocks_.at(bi);
    std::vector<at::Tensor> K, V;
    at::Tensor kprev, vprev;
    for (int64_t l = 0; l < L_; ++l) {
      at::Tensor kh, vh;
      reconstruct(l, b.ck[size_t(l)]->decode(at::kFloat, device()), b.cv[size_t(l)]->decode(at::kFloat, device()),
                  kprev, vprev, kh, vh);
      K.push_back(aqua_unrows(kh, B_, H_, D_).to(info_.dtype));
      V.push_back(aqua_unrows(vh, B_, H_, D_).to(info_.dtype));
      kprev = kh;
      vprev = vh;
    }
    return {K, V};
  }

  std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>> cached_block(size_t bi) const override {
    const Block& b = blocks_.at(bi);
    return {b.k_hat, b.v_att};
  }

 private:
  struct Layer {
    at::Tensor pk, pv;  // prefix, post-RoPE keys as received
    at::Tensor bk, bv;  // buffer, post-RoPE keys as received
    int64_t buf_start = 0;
    int64_t seen = 0;
  };
  struct Block {
    int64_t t0 = 0, t1 = 0;
    std::vector<std::unique_ptr<AquaCoded>> ck, cv;  // per layer: stored residual codes
    std::vector<at::Tensor> k_att, v_att;            // decode cache: post-RoPE K̂, V̂ [B,H,n,D]
    std::vector<at::Tensor> k_hat;                   // decode cache: pre-RoPE K̂ [B,H,n,D]
    at::Tensor prev_k, prev_v;                       // layer l−1 reconstruction rows while encoding
  };

  at::Device device() const { return info_.device; }

  // K̂_l, V̂_l rows (fp32) from the dequantized residuals and layer l−1's reconstruction.
  void reconstruct(int64_t l, const at::Tensor& rk, const at::Tensor& rv, const at::Tensor& kprev,
                   const at::Tensor& vprev, at::Tensor& kh, at::Tensor& vh) const {
    if (l == 0 || s_.predictors == "none") {
      kh = rk;
      vh = rv;
      return;
    }
    kh = preds_.key[size_t(l)].apply(kprev) + rk;
    vh = preds_.value[size_t(l)].apply(at::cat({kh, vprev}, 1)) + rv;
  }

  void encode_layer(int l, Layer& Ly, const Rope* rope) {
    const int64_t T = Ly.bk.size(2);
    if (l == 0) {
      pending_ = Block{};
      pending_.t0 = Ly.buf_start;
      pending_.t1 = Ly.buf_start + T;
    } else if (Ly.buf_start != pending_.t0 || Ly.buf_start + T != pending_.t1) {
      throw error("aqua policy: layer {} buffer [{}, {}) differs from layer 0's [{}, {})", l, Ly.buf_start,
                  Ly.buf_start + T, pending_.t0, pending_.t1);
    }
    at::Tensor k_pre = rope ? rope->apply_range(Ly.bk, Ly.buf_start, /*inverse=*/true) : Ly.bk;
    at::Tensor K = aqua_rows(k_pre).to(at::kFloat), V = aqua_rows(Ly.bv).to(at::kFloat);
    std::unique_ptr<AquaCoded> ck, cv;
    at::Tensor kh, vh;
    const AquaRowCodec& codec = l == 0 ? *first_ : *body_;
    if (l == 0 || s_.predictors == "none") {
      ck = codec.encode(K);
      cv = codec.encode(V);
      reconstruct(l, ck->decode(at::kFloat, device()), cv->decode(at::kFloat, device()), {}, {}, kh, vh);
    } else {
      auto pk = preds_.key[size_t(l)].apply(pending_.prev_k);
      ck = codec.encode(K - pk);
      kh = pk + ck->decode(at::kFloat, device());
      auto pv = preds_.value[size_t(l)].apply(at::cat({kh, pending_.prev_v}, 1));
      cv = codec.encode(V - pv);
      vh = pv + cv->decode(at::kFloat, device());
    }
    auto k_hat = aqua_unrows(kh, B_, H_, D_).to(info_.dtype);
    pending_.k_hat.push_back(k_hat);
    pending_.k_att.push_back(rope ? rope->apply_range(k_hat, Ly.buf_start, false) : k_hat);
    pending_.v_att.push_back(aqua_unrows(vh, B_, H_, D_).to(info_.dtype));
    pending_.ck.push_back(std::move(ck));
    pending_.cv.push_back(std::move(cv));
    pending_.prev_k = kh;
    pending_.prev_v = vh;
    Ly.bk = at::Tensor();
    Ly.bv = at::Tensor();
  }

  AquaSettings s_;
  higgs::PredictorSet preds_;
  std::shared_ptr<const AquaRowCodec> body_, first_;
  int64_t body_C_ = -1;
  ModelInfo info_;
  int64_t B_ = 0, H_ = 0, D_ = 0, C_ = 0, L_ = 0;
  std::vector<Layer> layers_;
  std::vector<Block> blocks_;
  Block pending_;
  bool flush_ = false;
  int64_t seen_ = 0, buf_start_ = -1;
  int next_layer_ = 0;
};

// --- registry hooks -----------------------------------------------------------------------

void check(const nlohmann::json& m) {
  require_no_codecs(m, "aqua");
  const auto& p = m.at("policy");
  auto pow2 = [](int64_t x) { return x > 0 && (x & (x - 1)) == 0; };
  if (!pow2(p.at("edenn_n").get<int64_t>()))
    throw ParamError({"policy", "edenn_n"}, "edenn_n must be a power of two (indices are log2(n) bits)");
  if (!pow2(p.at("first_edenn_n").get<int64_t>()))
    throw ParamError({"policy", "first_edenn_n"}, "first_edenn_n must be a power of two");
  if (!pow2(p.at("hadamard_groupsize").get<int64_t>()))
    throw ParamError({"policy", "hadamard_groupsize"}, "hadamard_groupsize must be a power of two");
  if (std::log2(double(p.at("edenn_n").get<int64_t>())) > 16)
    throw ParamError({"policy", "edenn_n"}, "edenn_n must be at most 65536");
}

std::unique_ptr<KVCachePolicy> make(const nlohmann::json& m) { return make_aqua_policy(aqua_settings(m.at("policy"))); }

std::string label(const nlohmann::json& m) {
  const auto s = aqua_settings(m.at("policy"));
  std::string base = s.backbone == "affine" ? fmt::format("affine{}", s.affine_bits)
                                            : fmt::format("higgs d{} n{}", s.d, s.n);
  const std::string pred = s.predictors == "none" ? "" : "aqua ";
  return fmt::format("{}{} g{} r{} p{}{}", pred, base, s.g, s.recent_buffer_size, s.prefix_size,
                     s.not_quantize_first_layer ? " l0fp" : "");
}

}  // namespace

std::unique_ptr<AquaPolicy> make_aqua_policy(const AquaSettings& s) { return std::make_unique<AquaPolicyImpl>(s); }

MethodTraits aqua_traits() {
  MethodTraits t;
  t.name = "aqua";
  t.kind = ComponentKind::Policy;
  t.summary = "AQUA-KV: inter-layer linear predictors + HIGGS residual VQ (prefix + fp16 buffer); "
              "predictors: none = HIGGS alone";
  t.params = {
      {"edenn_d", ParamType::Int, 2, 1, 8, {}, "HIGGS vector dimension d"},
      {"edenn_n", ParamType::Int, 16, 2, 65536, {}, "HIGGS grid size n (log2(n)/d bits per value)"},
      {"hadamard_groupsize", ParamType::Int, 1024, 1, 1 << 20, {}, "Hadamard group g (g_eff = min(g, next_pow2(C)))"},
      {"first_edenn_d", ParamType::Int, 2, 1, 8, {}, "layer-0 grid dimension"},
      {"first_edenn_n", ParamType::Int, 256, 2, 65536, {}, "layer-0 grid size (d=2, n=256: 4 bits)"},
      {"not_quantize_first_layer", ParamType::Bool, false, 0, 0, {}, "keep layer 0 in fp16"},
      {"backbone", ParamType::Enum, "higgs", 0, 0, {"higgs", "affine"}, "residual quantizer"},
      {"affine_bits", ParamType::Int, 2, 1, 8, {"1", "2", "3", "4", "8"}, "affine backbone bits (layers >= 1)"},
      {"first_affine_bits", ParamType::Int, 4, 1, 8, {"1", "2", "3", "4", "8"}, "affine backbone bits of layer 0"},
      {"affine_group", ParamType::Int, 64, 1, 1 << 20, {}, "affine backbone group (channels of a token row)"},
      {"recent_buffer_size", ParamType::Int, 128, 1, 1 << 30, {}, "R: fp16 buffer flushed as one block when >= R"},
      {"prefix_size", ParamType::Int, 4, 0, 1 << 30, {}, "first positions kept fp16 (sinks)"},
      {"predictors", ParamType::String, "none", 0, 0, {}, "HDF5 file from kvx calibrate, or none (HIGGS alone)"},
      {"grid_dir", ParamType::String, "", 0, 0, {}, "HIGGS grid cache dir (default $KVX_GRID_DIR or data/grids)"},
      // Used only with predictors: auto (the runner calibrates once per setting and caches).
      {"calib_corpus", ParamType::String, "data/wikitext-2/valid.txt", 0, 0, {}, "predictors: auto: calibration corpus"},
      {"calib_nsamples", ParamType::Int, 32, 2, 1 << 20, {}, "predictors: auto: calibration sequences"},
      {"calib_valid_nsamples", ParamType::Int, 4, 1, 1 << 20, {}, "predictors: auto: held-out sequences"},
      {"calib_seqlen", ParamType::Int, 1024, 0, 1 << 30, {}, "predictors: auto: tokens per sequence (0 = model context)"},
      {"calib_percdamp", ParamType::Float, 1e-3, 0, 1e6, {}, "predictors: auto: ridge damping"},
      {"calib_seed", ParamType::Int, 0, 0, 1e18, {}, "predictors: auto: sampling and split seed"},
  };
  t.bits = "2-4";
  t.needs_calibration = true;
  t.check = check;
  t.make_policy = make;
  t.label = label;
  return t;
}

nlohmann::json parse_aqua_shorthand(const std::string& text) {
  nlohmann::json p{{"type", "aqua"}};
  size_t start = 4;
  while (start < text.size()) {
    if (text[start] != ':') throw error("bad aqua shorthand '{}'", text);
    const size_t end = text.find(':', start + 1);
    const std::string tok = text.substr(start + 1, end == std::string::npos ? std::string::npos : end - start - 1);
    start = end == std::string::npos ? text.size() : end;
    auto num = [&](size_t skip) {
      try {
        return std::stoll(tok.substr(skip));
      } catch (...) {
        throw error("aqua shorthand '{}': '{}' needs a number", text, tok);
      }
    };
    if (tok.rfind("pred=", 0) == 0) p["predictors"] = tok.substr(5);
    else if (tok == "affine") p["backbone"] = "affine";
    else if (tok == "nofirst") p["not_quantize_first_layer"] = true;
    else if (tok.size() > 1 && tok[0] == 'd') p["edenn_d"] = num(1);
    else if (tok.size() > 1 && tok[0] == 'n') p["edenn_n"] = num(1);
    else if (tok.size() > 1 && tok[0] == 'g') p["hadamard_groupsize"] = num(1);
    else if (tok.size() > 1 && tok[0] == 'r') p["recent_buffer_size"] = num(1);
    else if (tok.size() > 1 && tok[0] == 'p') p["prefix_size"] = num(1);
    else if (tok.size() > 1 && tok[0] == 'b') p["affine_bits"] = num(1);
    else throw error("aqua shorthand '{}': unknown field '{}' (expected d N, n N, g N, r N, p N, bN, affine, nofirst, pred=PATH)", text, tok);
  }
  return {{"key", "none"}, {"value", "none"}, {"policy", p}};
}

}  // namespace kvx
