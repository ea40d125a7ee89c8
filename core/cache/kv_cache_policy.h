// The KV-cache policy interface (ALGORITHMS.md section 1.1): the one seam between the model
// and every compression method.
//
// Contract, per forward chunk, for layer l = 0..L-1 in order:
//   1. the model computes q, k_new, v_new ([B, Hkv, n_new, D], keys after RoPE); if
//      wants_queries(), it hands q ([B, Hq, n_new, D], after RoPE) to observe_queries(l, ...);
//   2. update(l, k_new, v_new, step) appends the chunk and returns what attention uses:
//      cached entries (as the policy reconstructs them) followed by the chunk's own keys and
//      values in full precision;
//   3. the model attends: a query at absolute position p may use entry i iff key_pos[i] == -1
//      (a summary entry), or key_pos[i] <= p and, when window >= 0,
//      (key_pos[i] < sink || p - key_pos[i] < window);
//   4. if wants_attention(), the model hands the softmax probabilities of the chunk's queries
//      ([B, Hq, n_new, N], fp32) to observe_attention(l, ...).
// After layer L-1 the model calls end_step(step).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kvx {

class Rope;  // core/model/rope.h; nullptr for models without rotary embeddings

struct ModelInfo {
  int64_t n_layers = 0;
  int64_t n_heads = 0;     // query heads
  int64_t n_kv_heads = 0;  // key/value heads (GQA when < n_heads)
  int64_t head_dim = 0;
  at::ScalarType dtype = at::kFloat;  // compute dtype of keys/values handed to the policy
  at::Device device = at::kCPU;
  const Rope* rope = nullptr;
};

struct StepInfo {
  int64_t pos0 = 0;   // absolute position of the chunk's first token
  int64_t n_new = 0;  // tokens in this chunk (1 = decode step)
  const Rope* rope = nullptr;
};

struct AttnInputs {
  at::Tensor k, v;        // [B, Hkv, N, D] compute dtype: cached entries first, then the chunk
  at::Tensor key_pos;     // [N] int64 absolute position per entry; -1 = summary (always visible)
  int64_t n_cached = 0;   // N - n_new
  int64_t sink = -1;      // sliding-window mask parameters (section 6.4); -1 = plain causal
  int64_t window = -1;
  // Optional per-KV-head positions [Hkv, N] (int64) for policies whose heads keep different
  // entries (h2o, razor, uncomp). When defined it replaces key_pos in the mask, per KV head:
  // -1 = summary (always visible), -2 = empty padding slot (never visible). Undefined (the
  // default) keeps the shared-key_pos path unchanged.
  at::Tensor head_pos;
};

// One named piece of storage and its exact size in bits (ALGORITHMS.md section 1.4).
struct MemorySegment {
  std::string name;        // e.g. "k.codes", "v.scales", "k.residual"
  int64_t elements = 0;    // values represented (for codes) or stored (for metadata)
  int64_t bits = 0;        // exact bits held, packing and metadata included
  enum Kind { kDevice, kOffload, kSide } kind = kDevice;  // only kDevice enters bpv
};

struct MemoryReport {
  std::vector<MemorySegment> segments;
  int64_t tokens_seen = 0;     // T_seen: tokens processed so far (evicted ones included)
  int64_t tokens_kept = 0;     // entries currently held per layer and head (for retained fraction)
  int64_t device_bits() const;
  int64_t offload_bits() const;
  int64_t side_bits() const;
  int64_t device_bytes() const { return (device_bits() + 7) / 8; }
  // bits per K/V value over everything seen: device_bits / (2·L·B·Hkv·D·T_seen)
  double bpv(const ModelInfo& m, int64_t batch) const;
};

class KVCachePolicy {
 public:
  virtual ~KVCachePolicy() = default;
  virtual void reset(const ModelInfo& m, int64_t batch) = 0;  // start a new sequence
  virtual AttnInputs update(int layer, const at::Tensor& k_new, const at::Tensor& v_new,
                            const StepInfo& s) = 0;
  virtual bool wants_queries() const { return false; }
  virtual void observe_queries(int layer, const at::Tensor& q, const StepInfo& s) {}
  virtual bool wants_attention() const { return false; }
  virtual void observe_attention(int layer, const at::Tensor& probs, const StepInfo& s) {}
  virtual void end_step(const StepInfo& s) {}
  virtual MemoryReport memory() const = 0;
  // Name of the attention path this policy needs from the model (recorded in result rows).
  virtual std::string name() const = 0;
};

// The trivial policy: keeps every key and value in the compute dtype, returns all of them.
std::unique_ptr<KVCachePolicy> make_full_precision_policy();

}  // namespace kvx
