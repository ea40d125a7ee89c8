#include "core/cache/segment_policy.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "core/cache/dense_attention.h"
#include "core/cache/packed_store.h"
#include "core/kernels/step_rows.h"
#include "core/common/error.h"

namespace kvx {
namespace {

at::Tensor cat_tokens(const std::vector<at::Tensor>& parts) {
  std::vector<at::Tensor> keep;
  for (const auto& p : parts)
    if (p.defined() && p.size(2) > 0) keep.push_back(p);
  if (keep.empty()) return at::Tensor();
  if (keep.size() == 1) return keep[0];
  return at::cat(keep, 2);
}

bool training_chunk(const at::Tensor& k, const at::Tensor& v) {
  return at::GradMode::is_enabled() && (k.requires_grad() || v.requires_grad());
}

// ---------------------------------------------------------------- compressed bodies
// One side's (K or V) body: its storage, in order of position.
class Body {
 public:
  virtual ~Body() = default;
  virtual int64_t tokens() const = 0;
  virtual void append(const at::Tensor& x) = 0;      // a block encoded after the tokens held
  virtual void requantize(const at::Tensor& x) = 0;  // KVQ requantize_all: encode([decode(body), x])
  virtual at::Tensor decode(at::ScalarType dtype) = 0;  // every token, [B, H, N, D]
  virtual void account(const std::string& prefix, SegmentTally& t) const = 0;
};

// Any codec's CodedBlocks. The decoded body is kept between calls so that each block is decoded
// once (a RequantizeAll flush replaces the body, so it is decoded again then); training decodes
// afresh (the kept copy is written in place).
class BlockBody final : public Body {
 public:
  explicit BlockBody(std::shared_ptr<const TokenCodec> c) : codec_(std::move(c)) {}
  int64_t tokens() const override {
    int64_t n = 0;
    for (const auto& b : blocks_) n += b->tokens();
    return n;
  }
  void append(const at::Tensor& x) override { blocks_.push_back(codec_->encode(x)); }
  void requantize(const at::Tensor& x) override {
    auto all = cat_tokens({decode(x.scalar_type()), x});
    blocks_.clear();
    decoded_.clear();
    done_ = 0;
    blocks_.push_back(codec_->encode(all));
  }
  at::Tensor decode(at::ScalarType dtype) override {
    if (at::GradMode::is_enabled()) {
      std::vector<at::Tensor> parts;
      for (const auto& b : blocks_) parts.push_back(b->decode(dtype));
      return cat_tokens(parts);
    }
    for (; done_ < blocks_.size(); ++done_) decoded_.append(blocks_[done_]->decode(dtype));
    return decoded_.view();
  }
  void account(const std::string& prefix, SegmentTally& t) const override {
    for (const auto& b : blocks_) b->account(prefix, t);
  }

 private:
  std::shared_ptr<const TokenCodec> codec_;
  std::vector<std::unique_ptr<CodedBlock>> blocks_;
  FpRows decoded_;
  size_t done_ = 0;
};

// Affine codes in the kernels' layout: runs of PackedStore (one unless per-channel Append flushes
// leave a group unfinished: a new block's groups start at its first token).
class PackedBody final : public Body {
 public:
  PackedBody(const CodecFormat& f, bool key) : f_(f), key_(key) {}
  int64_t tokens() const override {
    int64_t n = 0;
    for (const auto& r : runs_) n += r.tokens();
    return n;
  }
  void append(const at::Tensor& x) override {
    if (runs_.empty() || (per_channel() && runs_.back().tokens() % f_.group != 0)) runs_.emplace_back(make_run());
    runs_.back().append(x.detach());
  }
  void requantize(const at::Tensor& x) override {
    if (runs_.size() > 1) {  // re-encode as one block
      auto all = cat_tokens({decode(at::kFloat), x.detach().to(at::kFloat)});
      runs_.clear();
      append(all);
      return;
    }
    if (!per_channel() || runs_.empty()) return append(x);  // per-token groups: the held codes stay as they are
    PackedStore& r = runs_.front();
    const int64_t full = r.tokens() / f_.group * f_.group;  // the unfinished group takes the new tokens
    at::Tensor open = r.decode(at::kFloat, full, r.tokens());
    r.truncate(full);
    r.append(cat_tokens({open, x.detach().to(at::kFloat)}));
  }
  at::Tensor decode(at::ScalarType dtype) override {
    std::vector<at::Tensor> parts;
    for (const auto& r : runs_) parts.push_back(r.decode(dtype, 0, r.tokens()));
    return cat_tokens(parts);
  }
  void account(const std::string& prefix, SegmentTally& t) const override {
    for (const auto& r : runs_) r.account(prefix, t);
  }
  // The tokens the fused kernel reads in place: whole tiles (and whole key groups) of the one run;
  // -1 when the body has several runs.
  int64_t kernel_tokens() const {
    if (runs_.size() > 1) return -1;
    if (runs_.empty()) return 0;
    const int64_t unit = per_channel() ? std::max<int64_t>(32, f_.group) : 32;
    return runs_.front().tokens() / unit * unit;
  }
  kernels::PackedBlock view(int64_t n) const { return runs_.front().view(n); }
  at::Tensor decode_range(at::ScalarType dtype, int64_t t0, int64_t t1) const { return runs_.front().decode(dtype, t0, t1); }
  // The block configuration the kernels see (for the support check before any token is stored).
  kernels::PackedBlock config(int64_t head_dim) const {
    kernels::PackedBlock b;
    b.bits = f_.bits;
    b.group = int(per_channel() ? f_.group : std::min<int64_t>(f_.group, head_dim));
    b.per_channel = per_channel();
    b.key_layout = key_;
    return b;
  }

 private:
  bool per_channel() const { return f_.axis == GroupAxis::Channel; }
  PackedStore make_run() const { return PackedStore(f_.bits, int(f_.group), per_channel(), key_); }
  CodecFormat f_;
  bool key_;
  std::vector<PackedStore> runs_;
};

class Int8Body final : public Body {
 public:
  int64_t tokens() const override { return store_.tokens(); }
  void append(const at::Tensor& x) override { store_.append(x.detach()); }
  void requantize(const at::Tensor& x) override { append(x); }  // per-token rows: identical
  at::Tensor decode(at::ScalarType dtype) override { return store_.decode(dtype, 0, store_.tokens()); }
  void account(const std::string& prefix, SegmentTally& t) const override { store_.account(prefix, t); }
  kernels::Int8Rows view() const { return store_.view(); }
  Int8Store& store() { return store_; }

 private:
  Int8Store store_;
};

enum class Storage { Blocks, Packed, Int8 };

// Whether a codec's format fits the kernels' layout for this head_dim (the side: key or value).
bool packable(const CodecFormat& f, bool key, int64_t D) {
  if (f.kind != CodecFormat::Affine || f.meta != at::kHalf || (f.bits != 2 && f.bits != 4 && f.bits != 8)) return false;
  if ((D * f.bits) % 32 != 0) return false;
  if (f.axis == GroupAxis::Channel) return key;  // values need per-token groups
  return D % std::min<int64_t>(f.group, D) == 0;
}

Storage storage_of(const SegmentsConfig& c, int64_t D) {
  const CodecFormat k = c.key_codec->format(), v = c.value_codec->format();
  if (k.kind == CodecFormat::Int8 && v.kind == CodecFormat::Int8) return Storage::Int8;
  if (packable(k, true, D) && packable(v, false, D)) return Storage::Packed;
  return Storage::Blocks;
}

class SegmentsPolicy final : public KVCachePolicy {
 public:
  explicit SegmentsPolicy(SegmentsConfig c) : cfg_(std::move(c)) {
    if (!cfg_.key_codec) cfg_.key_codec = make_fp_codec();
    if (!cfg_.value_codec) cfg_.value_codec = make_fp_codec();
    if (cfg_.sink < 0 || cfg_.residual_length < 0)
      throw error("segments policy: sink and residual_length must be >= 0 (got {}, {})", cfg_.sink,
                  cfg_.residual_length);
  }

  void reset(const ModelInfo& m, int64_t batch) override {
    info_ = m;
    batch_ = batch;
    storage_ = storage_of(cfg_, m.head_dim);
    const std::string why = segments_fused_unsupported(cfg_, m);
    fused_ = why.empty() && cfg_.kernel != KernelRequest::DequantThenAttend;
    if (cfg_.kernel == KernelRequest::Fused && !why.empty())
      throw error("{}: kernel: fused was requested, but this method cannot run fused here: {}", cfg_.name, why);
    layers_.clear();
    layers_.resize(size_t(m.n_layers));
    for (auto& L : layers_) {
      L.k = make_body(true);
      L.v = make_body(false);
    }
    seen_ = 0;
  }

  // Plain steps (KVCachePolicy::plain_steps), over a body the kernels (or on the CPU their
  // reference) read in place: with Append and RequantizeAll flushes, the steps that store their
  // token in the residual and flush nothing (the body stays as it is between flushes); with the
  // Sliding flush of an int8 body, the steps of a full window, each moving the window's oldest token
  // into the body.
  int64_t plain_steps(int64_t pos, int64_t want) override {
    const bool sliding = cfg_.flush == FlushMode::Sliding;
    if (layers_.empty() || storage_ == Storage::Blocks || (sliding && storage_ != Storage::Int8) ||
        cfg_.kernel == KernelRequest::DequantThenAttend || info_.n_heads / info_.n_kv_heads > kMaxFusedRows)
      return 0;
    if (!fused_ && !(info_.device.is_cpu() && cfg_.kernel == KernelRequest::Auto)) return 0;
    const Layer& L0 = layers_.front();  // every layer holds the same tokens and flushes with the others
    if (pos != L0.len)
      throw error("{} policy: a run of decode steps from position {}, but the cache holds {} tokens", cfg_.name, pos, L0.len);
    if ((!sliding && !L0.started) || L0.len < cfg_.sink || !kernel_ready(L0)) return 0;
    if (model_window_ > 0) want = std::min(want, model_window_ - L0.len);
    int64_t count = 0;
    if (sliding) {
      count = L0.resid == cfg_.residual_length && L0.lo == 0 && cfg_.residual_length > 0 ? want : 0;
    } else {
      for (int64_t resid = L0.resid, open = L0.open; count < want && !(open && resid + 1 >= cfg_.residual_length); ++count) {
        ++resid;
        open = true;
      }
    }
    if (count <= 0) return 0;
    for (Layer& L : layers_) {
      if (!kernel_ready(L) || !L.tk.reserve_more(count) || !L.tv.reserve_more(count)) return 0;
      if (sliding && (!int8_store(*L.k).reserve_more(count) || !int8_store(*L.v).reserve_more(count))) return 0;
    }
    for (Layer& L : layers_) {  // where step 0 stores and reads (plain_attend)
      const int64_t R = L.tk.tokens();
      L.plain = {L.tk.view(R, R + 1), L.tv.view(R, R + 1), L.tk.view(0, R + 1), L.tv.view(0, R + 1), {}, {}, {}, {}};
      if (sliding) {
        L.plain.body_k = static_cast<const Int8Body&>(*L.k).view();
        L.plain.body_v = static_cast<const Int8Body&>(*L.v).view();
        L.plain.into_k = int8_store(*L.k).room(1);
        L.plain.into_v = int8_store(*L.v).room(1);
      }
    }
    run_ = count;
    return count;
  }

  void advance(int64_t steps) override {
    const bool sliding = cfg_.flush == FlushMode::Sliding;
    for (Layer& L : layers_) {
      L.tk.grow(steps);
      L.tv.grow(steps);
      L.len += steps;
      if (sliding) {  // the window's oldest tokens went to the body
        int8_store(*L.k).grow(steps);
        int8_store(*L.v).grow(steps);
        L.tk.erase(0, steps);
        L.tv.erase(0, steps);
      } else {
        L.resid += steps;
        L.open = true;
      }
    }
    seen_ = layers_.front().len;
    count_plain_paths(steps);
  }

  at::Tensor attend(int layer, const at::Tensor& q, const at::Tensor& k_new, const at::Tensor& v_new, const StepInfo& s,
                    const AttentionOptions& opt) override {
    model_window_ = opt.model_window;
    if (s.step.defined()) return plain_attend(layer, q, k_new, v_new, s, opt);
    Layer& L = checked_layer(layer, k_new, v_new, s);
    const int64_t n = k_new.size(2);
    const int64_t rows = q.size(1) / k_new.size(1) * n;
    const bool window_ok = opt.model_window <= 0 || L.len + n <= opt.model_window;
    const bool fused = fused_ && window_ok && !training_chunk(k_new, v_new) && kernel_ready(L) &&
                       (cfg_.kernel == KernelRequest::Fused || rows <= kMaxFusedRows);
    if (cfg_.kernel == KernelRequest::Fused && !fused)
      throw error("{}: kernel: fused was requested, but layer {} cannot run fused: {}", cfg_.name, layer,
                  !window_ok ? "the model's sliding window is shorter than the cache"
                  : training_chunk(k_new, v_new) ? "gradients are recorded (training)"
                                                 : "per-channel key blocks that end inside a group (flush: append)");
    if (fused) {  // the kernel reads the chunk from the tail
      push(L, k_new, v_new);
      std::string impl;
      at::Tensor out = fused_attention(L, q, {L.tk.view(), L.tv.view()}, opt.scale, impl);
      note_path(L.len > 0, "fused", impl);
      store(layer, L, n);
      return out;
    }
    AttnInputs a = inputs(L, k_new, v_new);
    std::string impl;
    at::Tensor out = dense_attention(q, a, layer, s, opt, this, impl);
    const bool has_kernel = storage_ != Storage::Blocks && q.device().is_cpu();
    note_path(a.n_cached > 0, has_kernel ? "cpu_reference" : "dequant_then_attend", impl);
    store(layer, push(L, k_new, v_new), n);
    return out;
  }

  void append(int layer, const at::Tensor& k_new, const at::Tensor& v_new, const StepInfo& s) override {
    Layer& L = checked_layer(layer, k_new, v_new, s);
    store(layer, push(L, k_new, v_new), k_new.size(2));
  }

  AttnInputs update(int layer, const at::Tensor& k_new, const at::Tensor& v_new, const StepInfo& s) override {
    Layer& L = checked_layer(layer, k_new, v_new, s);
    AttnInputs a = inputs(L, k_new, v_new);
    store(layer, push(L, k_new, v_new), k_new.size(2));
    return a;
  }

  MemoryReport memory() const override {
    SegmentTally t;
    for (const auto& L : layers_) {
      t.add("k.sink", L.sk.elements(), L.sk.elements() * 16);
      L.k->account("k", t);
      t.add("k.residual", L.resid * per_token(), L.resid * per_token() * 16);
      t.add("v.sink", L.sv.elements(), L.sv.elements() * 16);
      L.v->account("v", t);
      t.add("v.residual", L.resid * per_token(), L.resid * per_token() * 16);
    }
    MemoryReport r;
    t.to_report(r);
    r.tokens_seen = seen_;
    r.tokens_kept = seen_;
    return r;
  }

  std::string name() const override { return cfg_.name; }

 private:
  struct Layer {
    FpRows sk, sv;              // sink
    std::unique_ptr<Body> k, v;  // compressed body
    // [leftovers | residual | chunk being stored]: leftovers are the body tokens the fused kernel
    // does not read in place (an unfinished tile or key group), decoded; CUDA-fused layers only
    FpRows tk, tv;
    int64_t lo = 0, resid = 0;
    // the plain run's step 0 (plain_steps): the tail rows its token goes to, the tail it reads and,
    // with an int8 body sliding, the body it reads and the rows its flushed token goes to; the run's
    // step d moves them d rows (whatever advance() did meanwhile)
    struct {
      at::Tensor put_k, put_v, tail_k, tail_v;
      kernels::Int8Rows body_k, body_v;
      Int8Block into_k, into_v;
    } plain;
    int64_t len = 0;       // tokens held (= next position)
    bool started = false;  // the body has been created (KVQ "first call" done)
    bool open = false;     // KVQ residual_open
  };

  std::unique_ptr<Body> make_body(bool key) const {
    const auto& codec = key ? cfg_.key_codec : cfg_.value_codec;
    switch (storage_) {
      case Storage::Packed: return std::make_unique<PackedBody>(codec->format(), key);
      case Storage::Int8: return std::make_unique<Int8Body>();
      case Storage::Blocks: break;
    }
    return std::make_unique<BlockBody>(codec);
  }

  int64_t per_token() const { return batch_ * info_.n_kv_heads * info_.head_dim; }

  Layer& checked_layer(int layer, const at::Tensor& k_new, const at::Tensor& v_new, const StepInfo& s) {
    if (layer < 0 || layer >= int(layers_.size()))
      throw error("{} policy: layer {} out of range (model has {} layers; reset() first?)", cfg_.name, layer,
                  layers_.size());
    if (k_new.dim() != 4 || v_new.dim() != 4 || k_new.size(2) != v_new.size(2))
      throw error("{} policy: keys/values must be [B, Hkv, n, D] with equal n", cfg_.name);
    Layer& L = layers_[size_t(layer)];
    if (s.pos0 != L.len)
      throw error("{} policy: layer {} got a chunk at position {} but holds {} tokens (positions must be "
                  "contiguous from 0 after reset)", cfg_.name, layer, s.pos0, L.len);
    if (k_new.size(2) == 0) throw error("{} policy: an empty chunk (layer {})", cfg_.name, layer);
    return L;
  }

  // [sink, body, residual, chunk] in the compute dtype, for dense attention.
  AttnInputs inputs(Layer& L, const at::Tensor& k_new, const at::Tensor& v_new) {
    AttnInputs a;
    const int64_t r0 = L.lo, r1 = L.lo + L.resid;
    a.k = cat_tokens({L.sk.view(), L.k->decode(k_new.scalar_type()), L.tk.view(r0, r1), k_new});
    a.v = cat_tokens({L.sv.view(), L.v->decode(v_new.scalar_type()), L.tv.view(r0, r1), v_new});
    const int64_t N = a.k.size(2), n = k_new.size(2);
    a.key_pos = at::arange(L.len + n - N, L.len + n, at::TensorOptions().dtype(at::kLong).device(k_new.device()));
    a.n_cached = N - n;
    return a;
  }

  bool kernel_ready(const Layer& L) const {
    return storage_ != Storage::Packed || static_cast<const PackedBody&>(*L.k).kernel_tokens() >= 0;
  }

  // Attention of q's n tokens over the sink, the body and `tail` (the chunk its last n tokens) by the
  // kernels (the CPU reference on the CPU, where the body is all of its tokens: no leftovers);
  // returns [B, n, Hq·D] in q's dtype.
  at::Tensor fused_attention(const Layer& L, const at::Tensor& q, const kernels::FpSegment& tail, double scale,
                             std::string& impl) const {
    const kernels::FpSegment sink{L.sk.view(), L.sv.view()};
    at::Tensor o;
    if (storage_ == Storage::Int8) {
      const auto k = static_cast<const Int8Body&>(*L.k).view(), v = static_cast<const Int8Body&>(*L.v).view();
      o = kernels::int8_attention(q, &k, &v, sink, tail, scale);
      impl = q.is_cuda() ? "kvx_int8" : "reference";
    } else {
      const auto& bk = static_cast<const PackedBody&>(*L.k);
      const auto& bv = static_cast<const PackedBody&>(*L.v);
      const int64_t T = fused_ ? bk.kernel_tokens() : bk.tokens();
      const kernels::PackedBlock k = T > 0 ? bk.view(T) : kernels::PackedBlock{}, v = T > 0 ? bv.view(T) : kernels::PackedBlock{};
      o = kernels::packed_attention(q, T > 0 ? &k : nullptr, T > 0 ? &v : nullptr, sink, tail, scale);
      impl = !q.is_cuda() ? "reference" : T > 0 ? "kvx_packed" : "kvx_dense";
    }
    return layout(q, o);
  }

  static Int8Store& int8_store(Body& b) { return static_cast<Int8Body&>(b).store(); }

  // A plain step at the run's step d (R the tail's tokens when the run began): the token goes to the
  // tail's row R + d; the kernels read R + d + 1 tail tokens (Append, RequantizeAll), or (Sliding)
  // the window's R + 1 from its row d and a body of its first tokens + d, after which window row d
  // goes to body row tokens + d. The body and the sink stay as they are over the run.
  at::Tensor plain_attend(int layer, const at::Tensor& q, const at::Tensor& k_new, const at::Tensor& v_new, const StepInfo& s,
                          const AttentionOptions& opt) {
    Layer& L = layers_.at(size_t(layer));
    const auto& P = L.plain;
    const int64_t* d = s.step.data_ptr<int64_t>();
    const kernels::StepGrowth moving{d, 1, 0, run_};
    kernels::put_rows(P.put_k, P.put_v, k_new, v_new, moving);
    std::string impl;
    at::Tensor out;
    if (cfg_.flush == FlushMode::Sliding) {
      const kernels::FpSegment sink{L.sk.view(), L.sv.view()}, window{P.tail_k, P.tail_v, moving};
      kernels::Int8Rows k = P.body_k, v = P.body_v;
      k.grow = v.grow = {d, 0, 1, run_};
      out = layout(q, kernels::int8_attention(q, &k, &v, sink, window, opt.scale));
      impl = q.is_cuda() ? "kvx_int8" : "reference";
      Int8Block into_k = P.into_k, into_v = P.into_v;
      int8_quantize_into(P.tail_k.narrow(2, 0, 1), into_k, moving);
      int8_quantize_into(P.tail_v.narrow(2, 0, 1), into_v, moving);
    } else {
      out = fused_attention(L, q, {P.tail_k, P.tail_v, {d, 0, 1, run_}}, opt.scale, impl);
    }
    note_plain_path(layer, kernels::attention_path(q), impl);
    return out;
  }

  // [B, Hq, n, D] attention output as [B, n, Hq·D] in q's dtype.
  static at::Tensor layout(const at::Tensor& q, const at::Tensor& o) {
    const int64_t B = q.size(0), n = q.size(2), Hq = q.size(1), D = q.size(3);
    return at::empty({B, n, Hq, D}, q.options()).copy_(o.transpose(1, 2)).view({B, n, Hq * D});
  }

  // The chunk at the tail's end, where store() takes it from.
  static Layer& push(Layer& L, const at::Tensor& k_new, const at::Tensor& v_new) {
    L.tk.append(k_new);
    L.tv.append(v_new);
    return L;
  }

  // The chunk just pushed to the tail (its last n tokens) goes to the sink, the residual or the
  // body by the flush rule.
  void store(int layer, Layer& L, int64_t n) {
    if (layer == int(layers_.size()) - 1) seen_ = L.len + n;
    int64_t c0 = L.lo + L.resid;
    const int64_t n_sink = std::clamp<int64_t>(cfg_.sink - L.len, 0, n);
    if (n_sink > 0) {
      L.sk.append(L.tk.view(c0, c0 + n_sink));
      L.sv.append(L.tv.view(c0, c0 + n_sink));
      L.tk.erase(c0, n_sink);
      L.tv.erase(c0, n_sink);
    }
    const int64_t m = n - n_sink;
    L.len += n;
    if (m == 0) return;
    if (cfg_.flush == FlushMode::Sliding) {
      const int64_t excess = L.resid + m - cfg_.residual_length;
      if (excess > 0) {
        flush(L, excess, false);
        L.resid = cfg_.residual_length;
      } else {
        L.resid += m;
      }
    } else if (!L.started) {  // the first call quantizes its whole chunk
      flush(L, m, false);
      L.started = true;
      L.open = false;
    } else if (L.open && L.resid + 1 >= cfg_.residual_length) {
      flush(L, L.resid + m, cfg_.flush == FlushMode::RequantizeAll);
      L.resid = 0;
      L.open = false;
    } else {
      L.resid += m;
      L.open = true;
    }
  }

  // Encodes the first `count` tokens after the leftovers into the body and drops them from the tail;
  // then the leftovers follow the body.
  void flush(Layer& L, int64_t count, bool requantize_all) {
    const at::Tensor xk = L.tk.view(L.lo, L.lo + count), xv = L.tv.view(L.lo, L.lo + count);
    if (requantize_all) {
      L.k->requantize(xk);
      L.v->requantize(xv);
    } else {
      L.k->append(xk);
      L.v->append(xv);
    }
    L.tk.erase(L.lo, count);
    L.tv.erase(L.lo, count);
    if (!fused_ || storage_ != Storage::Packed) return;
    const auto& bk = static_cast<const PackedBody&>(*L.k);
    const auto& bv = static_cast<const PackedBody&>(*L.v);
    const int64_t T = bk.kernel_tokens(), N = bk.tokens();
    if (T < 0) return;  // several runs: this layer attends densely (kernel_ready)
    const at::ScalarType dt = xk.scalar_type();
    L.tk.replace_front(L.lo, bk.decode_range(dt, T, N));
    L.tv.replace_front(L.lo, bv.decode_range(dt, T, N));
    L.lo = N - T;
  }

  SegmentsConfig cfg_;
  ModelInfo info_;
  int64_t batch_ = 1;
  Storage storage_ = Storage::Blocks;
  bool fused_ = false;
  std::vector<Layer> layers_;
  int64_t seen_ = 0;
  int64_t model_window_ = -1;  // the model's, as attend() last saw it
  int64_t run_ = 1;            // the steps of the plain run plain_steps() readied
};

}  // namespace

std::string segments_fused_unsupported(const SegmentsConfig& c, const ModelInfo& m) {
  auto key = c.key_codec ? c.key_codec : make_fp_codec(), value = c.value_codec ? c.value_codec : make_fp_codec();
  SegmentsConfig full = c;
  full.key_codec = key;
  full.value_codec = value;
  const Storage st = storage_of(full, m.head_dim);
  if (st == Storage::Blocks)
    return fmt::format("the codecs ({} / {}) are not stored in the fused kernels' layout (kvq with 2/4/8 bits, float16 "
                       "statistics and per-token values, or selective_int8)", key->name(), value->name());
  const std::string run = fused_run_unsupported(m);
  if (!run.empty()) return run;
  if (st == Storage::Int8) return kernels::int8_attention_unsupported(m.head_dim);
  const PackedBody kb(key->format(), true), vb(value->format(), false);
  return kernels::packed_attention_unsupported(kb.config(m.head_dim), vb.config(m.head_dim), m.head_dim);
}

std::unique_ptr<KVCachePolicy> make_segments_policy(SegmentsConfig cfg) {
  return std::make_unique<SegmentsPolicy>(std::move(cfg));
}

}  // namespace kvx
